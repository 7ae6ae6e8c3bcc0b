"""How the transformer learns: record a probe batch during training, export GIF / MP4 / PNG.

:class:`ProgressRecorder` records from any loop: a plain PyTorch loop calls
``recorder.record(model, step)``; :func:`stnviz.fit` calls it as a :class:`stnviz.train.Callback`
every ``every`` steps. Each record is one probe forward (eval mode, no grad) under capture, kept as
a :class:`Snapshot` (step, the first transformer's parameters, outputs and sampled region, loss,
accuracy and the health figures of :mod:`stnviz.diagnose`). Memory is bounded: past
``max_snapshots`` it drops every other snapshot, so the kept ones stay evenly spread over the
run. :func:`snapshots_from_checkpoints` builds the same from saved checkpoints (epoch evolution).

What loggers take, as they are: ``recorder.video()`` ``(T, 3, H, W)`` uint8 and
``recorder.image()`` ``(3, H, W)`` uint8 (TensorBoard's ``add_video`` / ``add_image``),
``recorder.to_frame()`` (a pandas table, one row per snapshot) and ``recorder.latest()`` (its last
row as floats, for ``log_metrics``)::

    recorder = ProgressRecorder(probe_images, probe_labels)
    for step, (images, labels) in enumerate(batches):
        ...  # forward, loss, backward, optimizer.step()
        if step % 50 == 0:
            recorder.record(model, step, train_loss=loss.item())
    recorder.save_gif("progress.gif"); recorder.to_frame()

Frames are composed with the raster back end of :mod:`stnviz.render` (Pillow), one
:func:`stnviz.render.region_tile` per probe image (input with its sampled region | output) and a
caption; :func:`save_gif`,
:func:`save_mp4` (imageio with imageio-ffmpeg's bundled ffmpeg) and :func:`save_contact_sheet`
write through a temp file and a rename, so a failure never leaves a half-written file.
"""

from .files import GIF_MAX_FPS, check_output_folder, check_output_path, save_gif, save_mp4, write_animation
from .frames import compose_frame, save_contact_sheet, sequence_frames
from .recorder import THETA_COLUMNS, ProgressRecorder, Snapshot, probe_snapshot, snapshots_from_checkpoints

__all__ = [
    "GIF_MAX_FPS",
    "ProgressRecorder",
    "Snapshot",
    "THETA_COLUMNS",
    "check_output_folder",
    "check_output_path",
    "compose_frame",
    "probe_snapshot",
    "save_contact_sheet",
    "save_gif",
    "save_mp4",
    "sequence_frames",
    "snapshots_from_checkpoints",
    "write_animation",
]
