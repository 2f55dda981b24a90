"""A minimal Waymo v1 ``Frame`` proto, built programmatically (no .proto file, no generated code).

Only the fields the converter needs are declared, with the field numbers of data_formats.md C.3;
protobuf skips every other field of a real ``Frame`` as unknown. The descriptors are assembled with
``google.protobuf.descriptor_pb2`` into a private ``DescriptorPool``, and classes come from
``message_factory.GetMessageClass``: this works with every protobuf runtime from 4.25 on and avoids
generated ``_pb2.py`` files, which are tied to the protoc version that wrote them.

Deliberate simplifications (wire-compatible, see C.3 and the protobuf encoding rules):

* enum fields (``name``, ``type``, ``rolling_shutter_direction``) are declared ``int32``: enums are
  varints on the wire, and int32 keeps unknown values instead of diverting them to unknown fields;
* nested messages (``Label.Box``, ``CameraSegmentationLabel.InstanceIDToGlobalIDMapping``) are
  top-level messages: names are not on the wire;
* repeated scalars follow the upstream packing (``MatrixFloat.data`` / ``MatrixInt32.data`` packed,
  the rest unpacked, proto2 default); parsing accepts both encodings either way.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "mwsis.waymo_v1"

# message -> [(field name, number, type, label)], type: scalar name or message name;
# label: "opt" optional, "rep" repeated (unpacked), "packed" repeated packed.
MESSAGES: dict[str, list[tuple[str, int, str, str]]] = {
    "Transform": [("transform", 1, "double", "rep")],
    "MatrixShape": [("dims", 1, "int32", "rep")],
    "MatrixFloat": [("data", 1, "float", "packed"), ("shape", 2, "MatrixShape", "opt")],
    "MatrixInt32": [("data", 1, "int32", "packed"), ("shape", 2, "MatrixShape", "opt")],
    "CameraCalibration": [("name", 1, "int32", "opt"), ("intrinsic", 2, "double", "rep"),
                          ("extrinsic", 3, "Transform", "opt"), ("width", 4, "int32", "opt"),
                          ("height", 5, "int32", "opt"), ("rolling_shutter_direction", 6, "int32", "opt")],
    "LaserCalibration": [("name", 1, "int32", "opt"), ("beam_inclinations", 2, "double", "rep"),
                         ("beam_inclination_min", 3, "double", "opt"), ("beam_inclination_max", 4, "double", "opt"),
                         ("extrinsic", 5, "Transform", "opt")],
    "Context": [("name", 1, "string", "opt"), ("camera_calibrations", 2, "CameraCalibration", "rep"),
                ("laser_calibrations", 3, "LaserCalibration", "rep")],
    "InstanceIdToGlobalIdMapping": [("local_instance_id", 1, "int32", "opt"), ("global_instance_id", 2, "int32", "opt"),
                                    ("is_tracked", 3, "bool", "opt")],
    "CameraSegmentationLabel": [("panoptic_label_divisor", 1, "int32", "opt"), ("panoptic_label", 2, "bytes", "opt"),
                                ("instance_id_to_global_id_mapping", 3, "InstanceIdToGlobalIdMapping", "rep"),
                                ("sequence_id", 4, "string", "opt"), ("num_cameras_covered", 5, "bytes", "opt")],
    "CameraImage": [("name", 1, "int32", "opt"), ("image", 2, "bytes", "opt"), ("pose", 3, "Transform", "opt"),
                    ("pose_timestamp", 5, "double", "opt"),
                    ("camera_segmentation_label", 10, "CameraSegmentationLabel", "opt")],
    "RangeImage": [("range_image_compressed", 2, "bytes", "opt"), ("camera_projection_compressed", 3, "bytes", "opt"),
                   ("range_image_pose_compressed", 4, "bytes", "opt"),
                   ("segmentation_label_compressed", 6, "bytes", "opt")],
    "Laser": [("name", 1, "int32", "opt"), ("ri_return1", 2, "RangeImage", "opt"),
              ("ri_return2", 3, "RangeImage", "opt")],
    # Label.Box: note width = 4, length = 5 (swapped relative to declaration order, C.3)
    "LabelBox": [("center_x", 1, "double", "opt"), ("center_y", 2, "double", "opt"), ("center_z", 3, "double", "opt"),
                 ("width", 4, "double", "opt"), ("length", 5, "double", "opt"), ("height", 6, "double", "opt"),
                 ("heading", 7, "double", "opt")],
    "Label": [("box", 1, "LabelBox", "opt"), ("type", 3, "int32", "opt"), ("id", 4, "string", "opt")],
    "CameraLabels": [("name", 1, "int32", "opt"), ("labels", 2, "Label", "rep")],
    "Frame": [("context", 1, "Context", "opt"), ("timestamp_micros", 2, "int64", "opt"),
              ("pose", 3, "Transform", "opt"),
              ("images", 4, "CameraImage", "rep"), ("lasers", 5, "Laser", "rep"),
              ("laser_labels", 6, "Label", "rep"), ("camera_labels", 8, "CameraLabels", "rep")],
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
            "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES}


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of the minimal proto (proto2, package ``mwsis.waymo_v1``)."""
    fd = descriptor_pb2.FileDescriptorProto(name="mwsis_waymo_v1_minimal.proto", package=PACKAGE, syntax="proto2")
    for msg, fields in MESSAGES.items():
        m = fd.message_type.add(name=msg)
        for name, number, typ, label in fields:
            f = m.field.add(name=name, number=number)
            f.label = _F.LABEL_OPTIONAL if label == "opt" else _F.LABEL_REPEATED
            if typ in _SCALARS:
                f.type = _SCALARS[typ]
            else:
                f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{typ}"
            if label == "packed":
                f.options.packed = True
    return fd


@functools.cache
def messages() -> SimpleNamespace:
    """Message classes by name (``messages().Frame``, ``messages().MatrixFloat``, ...); built once."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    return SimpleNamespace(**{name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
                              for name in MESSAGES})
