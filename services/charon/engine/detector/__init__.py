"""The detector: what every built-in engine simulates, and its file format.

``model`` holds the optics and the :class:`Detector` itself, ``analytic`` the sphere/cylinder
vessel with PMT patches, ``scene`` instanced triangle geometry (imported detectors), ``builders``
the reference and parametric detectors, ``files`` the ``.npz`` format and canonical form. This
package re-exports their public names.
"""

from charon.engine.detector.analytic import (
    NORMAL_TOLERANCE,
    PLACEMENT_TOLERANCE_MM,
    PMTArray,
    PMTLookup,
    Vessel,
)
from charon.engine.detector.builders import (
    REFERENCE_ABSORPTION_MM,
    REFERENCE_N,
    REFERENCE_PMT_RADIUS_MM,
    REFERENCE_PMTS,
    REFERENCE_QE,
    REFERENCE_RADIUS_MM,
    REFERENCE_SCATTERING_MM,
    cylinder_detector,
    fibonacci_sphere,
    reference_detector,
    sphere_detector,
    water,
)
from charon.engine.detector.files import detector_from_arrays, load_detector, save_detector
from charon.engine.detector.model import (
    FILE_FORMAT,
    FILE_VERSION,
    HC_EV_NM,
    SURFACE_MODELS,
    SURFACE_TABLES,
    Channels,
    Detector,
    Material,
    Surface,
    WavelengthTable,
    group_velocity,
)
from charon.engine.detector.scene import Scene, scene_from_triangles

__all__ = [
    "FILE_FORMAT", "FILE_VERSION", "HC_EV_NM", "NORMAL_TOLERANCE", "PLACEMENT_TOLERANCE_MM",
    "REFERENCE_ABSORPTION_MM", "REFERENCE_N", "REFERENCE_PMTS", "REFERENCE_PMT_RADIUS_MM", "REFERENCE_QE",
    "REFERENCE_RADIUS_MM", "REFERENCE_SCATTERING_MM", "SURFACE_MODELS", "SURFACE_TABLES", "Channels",
    "Detector", "Material", "PMTArray", "PMTLookup", "Scene", "Surface", "Vessel", "WavelengthTable",
    "cylinder_detector", "detector_from_arrays", "fibonacci_sphere", "group_velocity", "load_detector",
    "reference_detector", "save_detector", "scene_from_triangles", "sphere_detector", "water",
]
