"""Post-processing (registry `NMS`): candidate selection and non-maximum suppression."""

from ssdkit.postprocess.base import PostprocessConfig, Postprocessor
from ssdkit.postprocess.nms import HardNMS, HardNMSConfig

__all__ = ["PostprocessConfig", "Postprocessor", "HardNMS", "HardNMSConfig"]
