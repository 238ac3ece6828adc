"""Decode a frame through the Open Inference Protocol (KServe v2 / Triton gRPC) from Python.

The same code talks to cortexcast and to a Triton server running a `cortexcast export triton`
repository. Setup (Debian: apt-get install python3-grpcio python3-grpc-tools python3-numpy):

    python3 -m grpc_tools.protoc -I proto --python_out=clients/python --grpc_python_out=clients/python proto/inference/grpc_predict_v2.proto
    python3 clients/python/infer_v2.py --server 127.0.0.1:50051 --model ridge

It calls every RPC of the protocol and prints one JSON object: server and model metadata, and the
decoded image of one frame sent both ways (raw_input_contents and typed fp32_contents), so a test
can compare it with cortexcast's own Decode. Exit status 0 when every call succeeded.
"""
import argparse
import json
import sys

import grpc
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from inference import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402  (generated)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--model", required=True)
    ap.add_argument("--frame", help="a .npy file of raw responses (default: a fixed pattern)")
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(args.server))
    md = [("authorization", f"Bearer {args.token}")] if args.token else None
    out = {
        "live": stub.ServerLive(pb.ServerLiveRequest(), metadata=md).live,
        "ready": stub.ServerReady(pb.ServerReadyRequest(), metadata=md).ready,
        "model_ready": stub.ModelReady(pb.ModelReadyRequest(name=args.model), metadata=md).ready,
    }
    server = stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=md)
    out["server"] = {"name": server.name, "version": server.version}
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=args.model), metadata=md)
    out["model"] = {
        "name": meta.name,
        "platform": meta.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs],
    }
    neurons = meta.inputs[0].shape[-1]
    frame = np.load(args.frame).astype("<f4") if args.frame else ((np.arange(neurons) * 7 % 11) / 5).astype("<f4")

    def infer(typed: bool) -> list:
        tensor = pb.ModelInferRequest.InferInputTensor(name=meta.inputs[0].name, datatype="FP32", shape=[1, neurons])
        req = pb.ModelInferRequest(model_name=args.model, id="py-typed" if typed else "py-raw", inputs=[tensor])
        if typed:
            req.inputs[0].contents.fp32_contents.extend(frame.tolist())
        else:
            req.raw_input_contents.append(frame.tobytes())
        res = stub.ModelInfer(req, metadata=md)
        names = [o.name for o in res.outputs]
        image = np.frombuffer(res.raw_output_contents[names.index("image")], dtype="<f4")
        return {"id": res.id, "outputs": names, "shape": list(res.outputs[0].shape), "image": image.tolist()}

    out["raw"] = infer(typed=False)
    out["typed"] = infer(typed=True)
    try:
        stub.ModelInfer(pb.ModelInferRequest(model_name=args.model, inputs=[pb.ModelInferRequest.InferInputTensor(name="responses", datatype="FP32", shape=[1, 3])], raw_input_contents=[b"\0" * 12]), metadata=md)
        out["bad_shape"] = "accepted"
    except grpc.RpcError as e:
        out["bad_shape"] = {"code": e.code().name, "details": e.details()}
    try:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"), metadata=md)
        out["unknown_model"] = "accepted"
    except grpc.RpcError as e:
        out["unknown_model"] = {"code": e.code().name}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
