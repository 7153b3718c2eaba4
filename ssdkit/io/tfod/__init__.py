"""TensorFlow Object Detection API models, read without TensorFlow: `graphdef` parses frozen graphs,
`convert` turns an SSD graph into an ssdkit model: `from_tf_object_detection(path)` (re-exported here)."""

from ssdkit.io.tfod.convert import TFImport, from_tf_object_detection

__all__ = ["TFImport", "from_tf_object_detection"]
