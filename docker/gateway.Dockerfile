# The gateway: CPU only, no torch (it never imports it), so the image stays small.
# Its dependencies are pyproject.toml's core plus the gateway extra.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY service_common ./service_common
COPY search_gateway ./search_gateway
# The bulk importer (python -m bulk_importer), an HTTP client of the gateway, ships with it.
COPY bulk_importer ./bulk_importer
COPY docker/healthcheck.py ./docker/
RUN pip install grpcio-tools \
 && python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/tattoo_search/v1/*.proto \
 && pip install ".[gateway]" \
 && pip uninstall -y grpcio-tools
RUN useradd --create-home app
USER app
EXPOSE 8000
CMD ["python", "-m", "search_gateway"]
