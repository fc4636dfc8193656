# The scraper: CPU only and light. The project's torch dependencies are for the embed
# server, so only what the scraper imports is installed (and the package without deps).
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY scraper_service ./scraper_service
COPY service_common ./service_common
COPY docker/healthcheck.py ./docker/
RUN pip install grpcio-tools \
 && python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/tattoo_search/v1/*.proto \
 && pip install "grpcio>=1.70" "grpcio-health-checking>=1.70" "grpcio-reflection>=1.70" "protobuf>=5.29" "ddgs>=9.0" \
 && pip install --no-deps . \
 && pip uninstall -y grpcio-tools
RUN useradd --create-home app
USER app
EXPOSE 50052
CMD ["python", "-m", "scraper_service"]
