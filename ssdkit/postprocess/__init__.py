"""Post-processing (registry `POSTPROCESS`): candidate selection and non-maximum suppression."""

from ssdkit.postprocess.base import PostprocessConfig, Postprocessor
from ssdkit.postprocess.nms import HardNMS, HardNMSConfig
from ssdkit.postprocess.soft import SoftNMS, SoftNMSConfig

__all__ = ["PostprocessConfig", "Postprocessor", "HardNMS", "HardNMSConfig", "SoftNMS", "SoftNMSConfig"]
