"""The mambaserve.v1 Python stubs for the end-to-end tests, compiled at test time from proto/ with
Debian's protoc and grpc_python_plugin (so grpcio-tools is not needed)."""
import importlib
import shutil
import subprocess
import sys


def compile_protos(proto_dir, out_dir):
    """Compiles mambaserve/v1/mambaserve.proto into out_dir and imports it: (pb2, pb2_grpc)."""
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                    f"--plugin=protoc-gen-grpc_python={shutil.which('grpc_python_plugin')}",
                    "mambaserve/v1/mambaserve.proto"], check=True)
    sys.path.insert(0, out_dir)
    return (importlib.import_module("mambaserve.v1.mambaserve_pb2"),
            importlib.import_module("mambaserve.v1.mambaserve_pb2_grpc"))
