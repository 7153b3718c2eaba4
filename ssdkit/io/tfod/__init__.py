"""TensorFlow Object Detection API models, read without TensorFlow: `graphdef` parses frozen graphs,
`convert` turns an SSD graph into an ssdkit model (`ssdkit.io.convert.from_tf_object_detection`)."""
