# The scraper: CPU only and light. Its dependencies are pyproject.toml's core plus the
# scraper extra (no torch: that is the embed extra's).
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
 && pip install ".[scraper]" \
 && pip uninstall -y grpcio-tools
RUN useradd --create-home app
USER app
EXPOSE 50052
CMD ["python", "-m", "scraper_service"]
