"""Read a TensorFlow frozen graph (a serialised ``GraphDef``) without TensorFlow.

The message types are declared here, at run time, with the few fields ssdkit reads
(TensorFlow's ``graph.proto``, ``node_def.proto``, ``attr_value.proto``, ``tensor.proto`` and
``tensor_shape.proto`` give their numbers); protobuf keeps every other field as unknown bytes.
Nothing is unpickled or executed: a graph is data, and only its constants are turned into arrays.

Cost bounds for a hostile file: its size (`MAX_GRAPH_BYTES`), its node count (`MAX_NODES`), and
the elements of any one constant (`MAX_TENSOR_ELEMENTS`), checked before an array is made, so a
tiny tensor that claims a huge shape and one splatted value cannot allocate gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Graph", "Node", "read_graph", "parse_graph", "MAX_GRAPH_BYTES", "MAX_NODES", "MAX_TENSOR_ELEMENTS"]

MAX_GRAPH_BYTES = 1 << 30  # the largest TF OD API SSDs (ResNet-101 FPN) are ~250 MB
MAX_NODES = 200_000
MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32 in one constant
MAX_STRINGS = 1024  # strings decoded from one string constant

# TensorFlow's DataType numbers (types.proto) -> numpy, for the types a detector's constants use.
_DTYPES: dict[int, Any] = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}
# TensorProto's repeated field that holds each type's values when tensor_content is empty.
_VALUE_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    9: "int64_val",
    10: "bool_val",
    19: "half_val",
}


# The messages of a GraphDef that a frozen SSD graph uses, as one table (it reads best whole):
# message -> [(field name, number, "opt" | "rep", scalar type or message name)], numbers as in
# TensorFlow's graph.proto / node_def.proto / attr_value.proto / tensor.proto / tensor_shape.proto.
# Enums are read as int32, which has the same wire format.
_ATTR_VALUES = [
    ("s", 2, "bytes"),
    ("i", 3, "int64"),
    ("f", 4, "float"),
    ("b", 5, "bool"),
    ("type", 6, "int32"),
    ("shape", 7, "TensorShapeProto"),
    ("tensor", 8, "TensorProto"),
]
_SPEC: dict[str, list[tuple[str, int, str, str]]] = {
    "Dim": [("size", 1, "opt", "int64"), ("name", 2, "opt", "string")],
    "TensorShapeProto": [("dim", 2, "rep", "Dim"), ("unknown_rank", 3, "opt", "bool")],
    "TensorProto": [
        ("dtype", 1, "opt", "int32"),
        ("tensor_shape", 2, "opt", "TensorShapeProto"),
        ("tensor_content", 4, "opt", "bytes"),
        ("float_val", 5, "rep", "float"),
        ("double_val", 6, "rep", "double"),
        ("int_val", 7, "rep", "int32"),
        ("string_val", 8, "rep", "bytes"),
        ("int64_val", 10, "rep", "int64"),
        ("bool_val", 11, "rep", "bool"),
        ("half_val", 13, "rep", "int32"),
    ],
    # attr_value.proto: a ListValue holds lists of what an AttrValue holds one of, by the same numbers.
    "ListValue": [(name, number, "rep", kind) for name, number, kind in _ATTR_VALUES],
    "AttrValue": [("list", 1, "opt", "ListValue")]
    + [(name, number, "opt", kind) for name, number, kind in _ATTR_VALUES],
    "AttrEntry": [("key", 1, "opt", "string"), ("value", 2, "opt", "AttrValue")],
    "NodeDef": [
        ("name", 1, "opt", "string"),
        ("op", 2, "opt", "string"),
        ("input", 3, "rep", "string"),
        ("device", 4, "opt", "string"),
        ("attr", 5, "rep", "AttrEntry"),
    ],
    "GraphDef": [("node", 1, "rep", "NodeDef")],
}


@lru_cache(maxsize=1)
def _messages() -> dict[str, type]:
    """GraphDef and the messages it holds, built from `_SPEC` (proto3, so repeated
    numbers are packed; the parser accepts packed and unpacked alike)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError as exc:  # pragma: no cover - protobuf comes with the tfod extra
        raise ImportError("reading a TensorFlow graph needs protobuf: pip install 'ssdkit[tfod]'") from exc
    F = descriptor_pb2.FieldDescriptorProto
    labels = {"opt": F.LABEL_OPTIONAL, "rep": F.LABEL_REPEATED}
    kinds = {"string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64}
    kinds |= {"float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE, "bool": F.TYPE_BOOL}
    pkg = "ssdkit_tf"
    fdp = descriptor_pb2.FileDescriptorProto(name="ssdkit_tf_graph.proto", package=pkg, syntax="proto3")
    for msg_name, fields in _SPEC.items():
        msg = fdp.message_type.add(name=msg_name)
        if msg_name == "AttrValue":  # its fields are one `oneof value`, as in attr_value.proto
            msg.oneof_decl.add(name="value")
        for name, number, label, kind in fields:
            f = msg.field.add(name=name, number=number, label=labels[label])
            if msg_name == "AttrValue":
                f.oneof_index = 0
            if kind in kinds:
                f.type = kinds[kind]
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".{pkg}.{kind}"
    # `attr` is a map<string, AttrValue> in TensorFlow: on the wire a repeated entry message.
    # Declared as a plain repeated message here, its entries are read in order, last one wins.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{name}")) for name in _SPEC}


@dataclass
class Node:
    """One graph node: its op, inputs (``name``, ``name:1``, ``^control``) and attributes (decoded lazily)."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(repr=False)

    def attr(self, key: str, default: Any = None) -> Any:
        """An attribute as a Python value: bytes -> str, a list -> list, a tensor -> numpy array."""
        if key not in self.attrs:
            return default
        return _attr_value(self.attrs[key], f"{self.name}.{key}")

    @property
    def data_inputs(self) -> list[str]:
        """Inputs without control dependencies, as node names (``:0`` output suffixes dropped)."""
        return [i.split(":")[0] for i in self.inputs if not i.startswith("^")]


class Graph:
    """The nodes of a frozen graph by name, in file order."""

    def __init__(self, nodes: list[Node], source: str = "<graph>") -> None:
        self.source = source
        self.nodes: dict[str, Node] = {}
        for n in nodes:
            self.nodes[n.name] = n

    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name.split(":")[0].lstrip("^")]
        except KeyError:
            raise KeyError(f"{self.source}: no node named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.split(":")[0].lstrip("^") in self.nodes

    def by_op(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.op in ops]

    def const(self, name: str) -> np.ndarray:
        """The value of the Const node `name`, following Identity nodes (frozen variables read through them)."""
        node = self.resolve(name)
        if node.op != "Const":
            raise ValueError(f"{self.source}: node {node.name!r} is a {node.op}, not a constant")
        return node.attr("value")

    def resolve(self, name: str) -> Node:
        """`name`, or the node an Identity chain starting at it reads."""
        node = self[name]
        for _ in range(64):
            if node.op != "Identity" or not node.data_inputs:
                return node
            node = self[node.data_inputs[0]]
        raise ValueError(f"{self.source}: Identity chain at {name!r} is too long")


def _attr_value(value: Any, where: str) -> Any:
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode("utf-8", errors="replace")
    if kind == "tensor":
        return tensor_to_array(value.tensor, where)
    if kind == "shape":
        return None if value.shape.unknown_rank else [d.size for d in value.shape.dim]
    if kind == "list":
        lst = value.list
        for name in ("s", "i", "f", "b", "type"):
            items = list(getattr(lst, name))
            if items:
                return [v.decode("utf-8", errors="replace") for v in items] if name == "s" else items
        return []
    return getattr(value, kind) if kind else None


def tensor_to_array(t: Any, where: str = "tensor") -> np.ndarray:
    """A TensorProto -> numpy array of its dtype and shape (TensorFlow's rules: packed
    `tensor_content`, or the typed value list, whose last value fills the rest)."""
    if t.dtype == 7:  # DT_STRING: the messages of Assert nodes, for instance
        return np.array([v.decode("utf-8", errors="replace") for v in t.string_val[:MAX_STRINGS]], dtype=str)
    dtype = _DTYPES.get(t.dtype)
    if dtype is None:
        raise ValueError(f"{where}: tensor of TensorFlow dtype {t.dtype} is not supported")
    shape = [int(d.size) for d in t.tensor_shape.dim]
    if any(s < 0 for s in shape):
        raise ValueError(f"{where}: a constant cannot have an unknown dimension: {shape}")
    count = 1
    for s in shape:
        count *= s
        if count > MAX_TENSOR_ELEMENTS:
            raise ValueError(f"{where}: shape {shape} exceeds {MAX_TENSOR_ELEMENTS} elements")
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        if arr.size != count:
            raise ValueError(f"{where}: {arr.size} values in tensor_content but shape {shape} needs {count}")
        return arr.astype(dtype).reshape(shape)
    values = np.asarray(getattr(t, _VALUE_FIELD[t.dtype]))
    if t.dtype == 19:  # half_val holds the float16 bit patterns in int32s
        values = values.astype(np.uint16).view(np.float16)
    values = values.astype(dtype)
    if values.size == count:
        return values.reshape(shape)
    if values.size > count:
        raise ValueError(f"{where}: {values.size} values but shape {shape} holds {count}")
    out = np.empty(count, dtype=dtype)
    out[: values.size] = values
    out[values.size :] = values[-1] if values.size else 0
    return out.reshape(shape)


def parse_graph(data: bytes, source: str = "<bytes>") -> Graph:
    """Serialised GraphDef bytes -> `Graph`."""
    if len(data) > MAX_GRAPH_BYTES:
        raise ValueError(f"{source}: {len(data)} bytes is larger than any detector graph (limit {MAX_GRAPH_BYTES})")
    graph_def = _messages()["GraphDef"]()
    try:
        graph_def.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or a recursion limit on hostile nesting
        raise ValueError(
            f"{source}: not a TensorFlow GraphDef (a frozen_inference_graph.pb): {type(exc).__name__}: {exc}"
        ) from None
    if len(graph_def.node) > MAX_NODES:
        raise ValueError(f"{source}: {len(graph_def.node)} nodes is more than a detector has (limit {MAX_NODES})")
    if not graph_def.node:
        raise ValueError(f"{source}: the GraphDef has no nodes; is it a TensorFlow frozen graph?")
    nodes = [Node(n.name, n.op, list(n.input), {e.key: e.value for e in n.attr}) for n in graph_def.node]
    return Graph(nodes, source)


def read_graph(path: str | Path) -> Graph:
    """A frozen graph file (``frozen_inference_graph.pb``) -> `Graph`; the size is checked before reading."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such TensorFlow graph file: {path}")
    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise ValueError(f"{path}: {size} bytes is larger than any detector graph (limit {MAX_GRAPH_BYTES})")
    return parse_graph(path.read_bytes(), str(path))
