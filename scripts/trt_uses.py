"""The TensorRT API edge-mer uses: the reviewed list :mod:`trt_api` checks.

:func:`trt_api.check_coverage` fails when a scanned file touches a TensorRT name that no
entry covers, so a new call cannot slip past this list; and when an entry's call sites pass
another number of arguments or are gone. ``branch`` is the ``TrtVersion`` predicate
(edge/runners/tensorrt/device.py) of the code path that makes the call.
"""

from __future__ import annotations

from trt_api import Use

# Files whose TensorRT calls are checked (repo-relative).
TRT = "edge/runners/trt.py"
MEM = "edge/runners/trt_memory.py"
BUILD = "edge/runners/tensorrt/build.py"
DEVICE = "edge/runners/tensorrt/device.py"
PLAN = "edge/runners/tensorrt/plan.py"
CHECK = "edge/runners/tensorrt/check.py"
MACHINE = "edge/service/machine.py"
# doctor.py and machine.py read only tensorrt.__version__ (through module_version).
SCANNED = (TRT, MEM, BUILD, DEVICE, PLAN, CHECK, "edge/service/doctor.py", MACHINE)

NAMED = "named_tensors"
BINDINGS = "not named_tensors"

USES: tuple[Use, ...] = (
    # --- the runner (trt.py) and its buffers (trt_memory.py)
    Use("ICudaEngine.create_execution_context", "call", TRT),
    Use("IExecutionContext.set_input_shape", "call", TRT, 2, NAMED),
    Use("IExecutionContext.set_binding_shape", "call", TRT, 2, BINDINGS),
    Use("IExecutionContext.set_tensor_address", "call", TRT, 2, NAMED),
    Use("IExecutionContext.execute_async_v3", "call", TRT, 1, NAMED),
    Use("IExecutionContext.execute_async_v2", "call", TRT, 2, BINDINGS),
    Use(
        "Dims<-tuple",
        "probe",
        TRT,
        branch="",
        implicit=True,
        note="shapes are passed as tuples where the binding declares Dims",
    ),
    Use("ICudaEngine.num_io_tensors", "get", MEM, branch=NAMED),
    Use("ICudaEngine.get_tensor_name", "call", MEM, 1, NAMED),
    Use("ICudaEngine.get_tensor_mode", "call", MEM, 1, NAMED),
    Use("TensorIOMode.INPUT", "enum", MEM, branch=NAMED),
    Use("ICudaEngine.get_tensor_shape", "call", MEM, 1, NAMED),
    Use("ICudaEngine.get_tensor_dtype", "call", MEM, 1, NAMED),
    Use("nptype", "function", MEM, 1),
    Use("ICudaEngine.num_bindings", "get", MEM, branch=BINDINGS),
    Use("ICudaEngine.get_binding_name", "call", MEM, 1, BINDINGS),
    Use("ICudaEngine.get_binding_shape", "call", MEM, 1, BINDINGS),
    Use("ICudaEngine.get_binding_dtype", "call", MEM, 1, BINDINGS),
    Use("ICudaEngine.binding_is_input", "call", MEM, 1, BINDINGS),
    Use("Dims.__len__", "call", MEM, implicit=True, note="tuple(int(d) for d in shape)"),
    Use("Dims.__getitem__", "call", MEM, 1, implicit=True, note="iterating a Dims"),
    # --- the engine build (build.py, device.py, plan.py)
    Use("ILogger", "subclass", BUILD, 0, note="CapturingLogger calls trt.ILogger.__init__(self)"),
    Use("ILogger.log", "override", BUILD, 2),
    Use("ILogger.Severity.INTERNAL_ERROR", "enum", BUILD),
    Use("ILogger.Severity.ERROR", "enum", BUILD),
    Use("ILogger.Severity.WARNING", "enum", BUILD),
    Use("ILogger.Severity.INFO", "enum", BUILD),
    Use("ILogger.Severity.VERBOSE", "enum", BUILD),
    Use("ILogger.Severity.name", "get", BUILD, note="getattr(severity, 'name', ...)"),
    Use("Builder", "new", BUILD, 1),
    Use(
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "enum",
        DEVICE,
        branch="explicit_batch_flag_needed",
    ),
    Use(
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
        "enum",
        DEVICE,
        branch="strongly_typed_only",
        optional=True,
        note="getattr(..., None): set only while the enum still has it",
    ),
    Use("Builder.create_network", "call", BUILD, 1),
    Use("OnnxParser", "new", BUILD, 2),
    Use("OnnxParser.parse_from_file", "call", BUILD, 1),
    Use("OnnxParser.num_errors", "get", BUILD),
    Use("OnnxParser.get_error", "call", BUILD, 1),
    Use("ParserError.__str__", "call", BUILD, implicit=True, note="str(parser.get_error(i))"),
    Use("Builder.create_builder_config", "call", BUILD),
    Use("IBuilderConfig.set_memory_pool_limit", "call", BUILD, 2, "memory_pool_api"),
    Use("MemoryPoolType.WORKSPACE", "enum", BUILD, branch="memory_pool_api"),
    Use("IBuilderConfig.max_workspace_size", "set", BUILD, branch="not memory_pool_api"),
    Use("IBuilderConfig.set_flag", "call", BUILD, 1, "int8_flag or fp16_flag"),
    Use("BuilderFlag.INT8", "enum", PLAN, branch="int8_flag"),
    Use("BuilderFlag.FP16", "enum", PLAN, branch="fp16_flag"),
    Use("Builder.create_optimization_profile", "call", BUILD),
    Use("INetworkDefinition.num_inputs", "get", BUILD),
    Use("INetworkDefinition.get_input", "call", BUILD, 1),
    Use("ITensor.name", "get", BUILD),
    Use("ITensor.shape", "get", BUILD),
    Use("IOptimizationProfile.set_shape", "call", BUILD, 4),
    Use("IBuilderConfig.add_optimization_profile", "call", BUILD, 1),
    Use("IBuilderConfig.create_timing_cache", "call", BUILD, 1),
    Use("IBuilderConfig.set_timing_cache", "call", BUILD, 2),
    Use("Builder.build_serialized_network", "call", BUILD, 2),
    Use("IHostMemory", "buffer", BUILD, implicit=True, note="bytes(memoryview(blob))"),
    Use("ITimingCache.serialize", "call", BUILD),
    Use("Runtime", "new", BUILD, 1),
    Use("Runtime.deserialize_cuda_engine", "call", BUILD, 1),
)

# (file, name) -> why this TensorRT-looking name in that file is not (only) a TensorRT call.
IGNORED: dict[tuple[str, str], str] = {
    (TRT, "name"): "BufferPlan.name, the runner's name",
    (TRT, "shape"): "BufferPlan.shape",
    (TRT, "engine"): "the runner's attribute holding the ICudaEngine",
    (TRT, "precision"): "the runner's precision (from the engine name)",
    (MEM, "name"): "TensorIO/BufferPlan names, the backend's name",
    (MEM, "shape"): "TensorIO/BufferPlan/numpy shapes",
    (MEM, "dtype"): "numpy dtypes (np.dtype(...))",
    (MEM, "nbytes"): "BufferPlan.nbytes",
    (BUILD, "log"): "logging.Logger.log (the ILogger.log override is listed)",
    (BUILD, "precision"): "GraphBuild.precision",
    (DEVICE, "name"): "cudaDeviceProp.name, pycuda Device.name()",
    (DEVICE, "major"): "TrtVersion.major, cudaDeviceProp.major",
    (DEVICE, "minor"): "TrtVersion.minor, cudaDeviceProp.minor",
    (TRT, "free"): "the CUDA backend's free()",
    (TRT, "destroy"): "the CUDA backend's destroy()",
    (TRT, "parse"): "EngineName.parse",
    (MEM, "data"): "numpy's arr.ctypes.data",
    (BUILD, "DEBUG"): "logging.DEBUG",
    (BUILD, "min"): "BatchRange.min",
    (BUILD, "max"): "BatchRange.max",
    (DEVICE, "parse"): "TrtVersion.parse",
    (PLAN, "min"): "BatchRange.min",
    (PLAN, "max"): "BatchRange.max",
    (PLAN, "opt"): "BatchRange.opt",
    (PLAN, "name"): "Bundle state names",
    (PLAN, "shape"): "Bundle state shapes",
    (PLAN, "precision"): "EngineName.precision",
    (CHECK, "parse"): "TrtVersion.parse, EngineName.parse",
    (CHECK, "major"): "TrtVersion.major",
    (CHECK, "minor"): "TrtVersion.minor",
    (CHECK, "name"): "Path.name",
    (CHECK, "precision"): "EngineName/GraphBuild precision",
    (MACHINE, "start"): "threading.Thread.start",
    (MACHINE, "name"): "Path.name",
    (MACHINE, "power"): "RunMonitor.power samples",
}

# Fake classes of the tests -> the TensorRT class they stand in for ("" = the module).
FAKES: dict[tuple[str, str], str] = {
    ("tests/edge/runners/test_runners.py", "FakeTrt"): "",
    ("tests/edge/runners/test_runners.py", "FakeEngine"): "ICudaEngine",
    ("tests/edge/runners/test_runners.py", "FakeContext"): "IExecutionContext",
    ("tests/edge/runners/test_engine.py", "ILogger"): "ILogger",
    ("tests/edge/runners/test_engine.py", "Network"): "INetworkDefinition",
    ("tests/edge/runners/test_engine.py", "OnnxParser"): "OnnxParser",
    ("tests/edge/runners/test_engine.py", "Cache"): "ITimingCache",
    ("tests/edge/runners/test_engine.py", "Config"): "IBuilderConfig",
    ("tests/edge/runners/test_engine.py", "Profile"): "IOptimizationProfile",
    ("tests/edge/runners/test_engine.py", "Builder"): "Builder",
    ("tests/edge/runners/test_engine.py", "Runtime"): "Runtime",
}
# Fake members that need not exist in TensorRT: constructors take what a test needs (real
# engines and contexts are made by TensorRT, not constructed).
FAKE_INTERNAL = frozenset({"__init__"})
