"""Score the shipped RTS pair on RTS MNIST made by *other code*: torchvision's per-sample
``RandomAffine`` (rotation +-45 deg, scale 0.7-1.2, shift up to 17% of 42 px) on the 10,000 MNIST
test digits padded to 42x42, instead of stnviz's own generator. A check that the checkpoints did
not learn a quirk of ``stnviz.data.DistortedMNIST``.

Needs torchvision's MNIST files: ``python scripts/rts_other_code.py --data-root DIR [--seed N]``.
"""

import argparse

import torch
import torchvision
from torchvision.transforms import v2

import stnviz
from stnviz.data.imageset import ImageSet
from stnviz.train import evaluate


def torchvision_rts(images: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, 1, 28, 28) in [0, 1] -> (N, 1, 42, 42): centred on a 42x42 canvas, then one
    ``RandomAffine`` draw per digit."""
    torch.manual_seed(seed)
    canvas = torch.nn.functional.pad(images, (7, 7, 7, 7))
    affine = v2.RandomAffine(degrees=45, translate=(0.17, 0.17), scale=(0.7, 1.2),
                             interpolation=v2.InterpolationMode.BILINEAR)
    return torch.stack([affine(img) for img in canvas])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="folder with torchvision's MNIST files")
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()
    test = torchvision.datasets.MNIST(args.data_root, train=False)
    images = torchvision_rts(test.data.float().div(255).unsqueeze(1), args.seed)
    data = ImageSet(images, test.targets.clone(), name="rts_torchvision")
    for name in ("stn_cnn.mnist_rts", "cnn.mnist_rts"):
        result = evaluate(stnviz.load_pretrained(name, device="cpu"), data)
        print(f"{name}: test error {100 * result['error']:.2f}% on {result['n']} torchvision-RTS digits")


if __name__ == "__main__":
    main()
