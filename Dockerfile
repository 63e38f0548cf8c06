# callgate server image. Serving needs no torch: onnxruntime + numpy only.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# The offline voice (no Cartesia key) speaks through flite.
RUN apt-get update && apt-get install -y --no-install-recommends flite && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY callgate callgate
COPY processors processors
COPY pipelines pipelines
COPY twiml twiml
COPY amd_model amd_model
COPY simulator simulator
COPY server.py ./
RUN pip install --no-cache-dir .
# Agent files (the `example` agent). The installed package would look for them in site-packages/agents
# (AGENTS_DIR's default is the folder beside the callgate package), so name this copy explicitly.
COPY agents agents
ENV AGENTS_DIR=/app/agents
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz'); sys.exit(0)"
CMD ["callgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
