"""The device model: predicts latency, peak memory and energy of an ONNX model on a target from
its graph (per-node FLOPs and bytes against a roofline), with efficiency factors per operator
kind that `edgekd calibrate` fits from real measurements."""

from .calibration import Calibration, Factors, fit_factors, load_calibration, save_calibration
from .graph import GraphCost, NodeCost, graph_costs
from .roofline import Prediction, predict, predict_model

__all__ = ["Calibration", "Factors", "fit_factors", "load_calibration", "save_calibration", "GraphCost", "NodeCost",
           "graph_costs", "Prediction", "predict", "predict_model"]
