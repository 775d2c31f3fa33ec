"""The Paddle Inference engine that runs exported models of both tasks (``InferenceModel``)."""
from __future__ import annotations

import os

from gamma_kit.runtime import resolve_device

__all__ = ["InferenceModel"]



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
