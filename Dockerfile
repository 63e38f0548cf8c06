# callgate server image. Serving needs no torch: onnxruntime + numpy only.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callgate callgate
COPY processors processors
COPY pipelines pipelines
COPY twiml twiml
COPY amd_model amd_model
COPY simulator simulator
COPY server.py ./
RUN pip install --no-cache-dir .
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz'); sys.exit(0)"
CMD ["callgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
