# The embed server with the GPU extra (onnxruntime-gpu); torch from PyPI is the CUDA build.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY service_common ./service_common
COPY embed_server ./embed_server
COPY docker/healthcheck.py ./docker/
# torch and torchvision first and pinned; then the project with the embed server's extra.
RUN pip install "torch==2.14.1" "torchvision==0.29.1" grpcio-tools \
 && python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/tattoo_search/v1/*.proto \
 && pip install ".[embed,gpu]" \
 && pip uninstall -y grpcio-tools
RUN useradd --create-home app && mkdir -p var/onnx-cache && chown -R app var
USER app
EXPOSE 50051
CMD ["python", "-m", "embed_server"]
