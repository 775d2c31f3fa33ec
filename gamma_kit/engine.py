"""The engines that run exported models of both tasks: Paddle Inference (``InferenceModel``) and, with
the ``onnx`` extra, onnxruntime on the same graph converted by paddle2onnx (``to_onnx``, ``OnnxModel``)."""
from __future__ import annotations

import os

from gamma_kit.runtime import resolve_device

__all__ = ["InferenceModel", "OnnxModel", "to_onnx", "onnx_available", "ONNX_NAME"]



class InferenceModel:
    """A static model run by ``paddle.inference``, shared by the fovea and segmentation exports.

    ``model`` is the graph file (``.pdmodel``, the legacy program format, or ``.json``, Paddle 3's
    PIR format) or the common prefix of the files (``PREFIX.json`` or ``PREFIX.pdmodel`` +
    ``PREFIX.pdiparams``; the PIR graph is taken when both exist). ``params`` defaults to the
    graph's ``.pdiparams`` sibling.

    ``device``: ``auto`` / ``cpu`` / ``gpu`` (as ``resolve_device``, which leaves Paddle's global
    device alone) or ``gpu:<k>``. On the CPU oneDNN is disabled: Paddle 3.3.1's CPU inference
    raises NotImplementedError with it on PIR graphs (SPEC 4). ``run(x, output)`` feeds the first
    input and returns output number ``output`` as NumPy. A missing, empty or unloadable file is a
    one-line error naming it.
    """

    GRAPH_SUFFIXES = (".json", ".pdmodel")

    def __init__(self, model: "str | os.PathLike", device: str = "auto", cpu_threads: int | None = None,
                 params: "str | os.PathLike | None" = None):
        from pathlib import Path

        import paddle.inference as paddle_infer

        model = Path(model)
        if model.suffix in self.GRAPH_SUFFIXES:
            graph = model if model.is_file() else None
            stem = model.with_suffix("")
        else:
            stem = model
            graph = next((model.with_name(model.name + s) for s in self.GRAPH_SUFFIXES
                          if model.with_name(model.name + s).is_file()), None)
        params = Path(params) if params is not None else stem.with_name(stem.name + ".pdiparams")
        if graph is None or not params.is_file():
            what = model.name if model.suffix in self.GRAPH_SUFFIXES else f"{stem.name}.json or .pdmodel"
            raise FileNotFoundError(f"{stem.parent}: no exported model ({what}, plus {params.name})")
        for f in (graph, params):
            if f.stat().st_size == 0:
                raise ValueError(f"{f}: empty file (0 bytes; an interrupted export?): export again")
        if not device.startswith("gpu:"):
            device = resolve_device(device)
        config = paddle_infer.Config(str(graph), str(params))
        if device.startswith("gpu"):
            config.enable_use_gpu(256, int(device.split(":")[1]))
        else:
            config.disable_gpu()
            config.disable_mkldnn()
            config.set_cpu_math_library_num_threads(cpu_threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
        config.disable_glog_info()
        try:
            self.predictor = paddle_infer.create_predictor(config)
        except Exception as exc:  # paddle raises RuntimeError/ValueError/OSError for broken files
            raise ValueError(f"{graph} / {params.name}: cannot be loaded as an exported model (truncated or "
                             f"corrupt: {type(exc).__name__})") from None
        self.graph = graph
        self.device = device

    def run(self, x, output: int = 0):
        """(N, ...) float32 input -> output number ``output`` of the graph as a NumPy array."""
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float32)
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        try:
            self.predictor.run()
        except Exception as exc:  # a graph that loads but does not run (another model's params)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"{self.graph}: the exported model failed to run ({type(exc).__name__}: "
                             f"{first[:200]})") from None
        names = self.predictor.get_output_names()
        if not 0 <= output < len(names):
            raise ValueError(f"{self.graph}: has {len(names)} output(s), output {output} was asked for "
                             "(an export of another kind?)")
        return self.predictor.get_output_handle(names[output]).copy_to_cpu()


ONNX_NAME = "model.onnx"
ONNX_OPSET = 13
_ONNX_HINT = "the ONNX path needs the onnx extra: pip install -c constraints.txt -e '.[onnx]'"


def onnx_available() -> bool:
    """True when paddle2onnx and onnxruntime (the ``onnx`` extra) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("paddle2onnx", "onnxruntime"))


def to_onnx(graph: "str | os.PathLike", params: "str | os.PathLike", out: "str | os.PathLike") -> "os.PathLike":
    """Convert an exported Paddle graph (legacy ``.pdmodel`` or PIR ``.json``) and its ``.pdiparams`` to
    ONNX (opset ``ONNX_OPSET``, checked, constants folded by onnxoptimizer) at ``out``, atomically; its
    console chatter goes to the log of ``paddle2onnx`` only on failure."""
    import contextlib
    import io
    from pathlib import Path

    from gamma_kit.safety import atomic_file

    try:
        import paddle2onnx
    except ImportError:
        raise ValueError(_ONNX_HINT) from None
    chatter = io.StringIO()
    with atomic_file(out) as tmp:
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                paddle2onnx.export(str(graph), str(params), tmp, opset_version=ONNX_OPSET, enable_onnx_checker=True,
                                   optimize_tool="onnxoptimizer")
        except Exception as exc:  # paddle2onnx raises what its converter raises
            last = chatter.getvalue().strip().splitlines()[-1:] or [str(exc)]
            raise ValueError(f"{graph}: paddle2onnx could not convert it ({type(exc).__name__}: {last[0][:200]})") \
                from None
    return Path(out)


class OnnxModel:
    """An exported model converted to ONNX (``to_onnx``), run by onnxruntime: ``run(x, output)`` as
    ``InferenceModel.run``. ``device``: ``auto``/``gpu`` take CUDA where onnxruntime was built with it,
    else the CPU."""

    def __init__(self, path: "str | os.PathLike", device: str = "auto", cpu_threads: int | None = None):
        from pathlib import Path

        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError(_ONNX_HINT) from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export with --format onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3                 # no per-node warnings on the console
        options.intra_op_num_threads = cpu_threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for broken files
            raise ValueError(f"{path}: cannot be loaded by onnxruntime (truncated or corrupt: "
                             f"{type(exc).__name__})") from None
        self.graph = path
        self.device = "gpu" if self.session.get_providers()[0].startswith("CUDA") else "cpu"
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x, output: int = 0):
        import numpy as np

        outputs = self.session.get_outputs()
        if not 0 <= output < len(outputs):
            raise ValueError(f"{self.graph}: has {len(outputs)} output(s), output {output} was asked for")
        return self.session.run([outputs[output].name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
