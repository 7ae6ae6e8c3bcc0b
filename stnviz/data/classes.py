"""Class names of the data sets stnviz ships samples of.

``GTSRB_CLASS_NAMES[c]`` is the sign of GTSRB class ``c`` (0-42), in the wording of the
benchmark's sign table (J. Stallkamp et al., IJCNN 2011).
"""

from __future__ import annotations

__all__ = ["GTSRB_CLASS_NAMES", "MNIST_CLASS_NAMES"]

MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))

GTSRB_CLASS_NAMES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing",
    "no passing for trucks", "right of way at next crossing", "priority road", "yield", "stop",
    "no vehicles", "no trucks", "no entry", "general caution", "curve left",
    "curve right", "double curve", "bumpy road", "slippery road", "road narrows right",
    "road work", "traffic signals", "pedestrians", "children crossing", "bicycles crossing",
    "ice / snow", "wild animals", "end of all limits", "turn right ahead", "turn left ahead",
    "ahead only", "straight or right", "straight or left", "keep right", "keep left",
    "roundabout", "end of no passing", "end of no passing for trucks",
)
assert len(GTSRB_CLASS_NAMES) == 43
