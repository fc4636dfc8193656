# The gateway: CPU only, no torch (it never imports it), so the image stays small.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY search_gateway ./search_gateway
COPY docker/healthcheck.py ./docker/
RUN pip install grpcio-tools \
 && python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/tattoo_search/v1/*.proto \
 && pip install "grpcio>=1.70" "grpcio-health-checking>=1.70" "protobuf>=5.29" "aiohttp>=3.10" "starlette>=0.40" \
      "uvicorn>=0.30" "python-multipart>=0.0.9" "prometheus-client>=0.20" "pillow>=11" "numpy>=1.26" \
 && pip install --no-deps . \
 && pip uninstall -y grpcio-tools
RUN useradd --create-home app
USER app
EXPOSE 8000
CMD ["python", "-m", "search_gateway"]
