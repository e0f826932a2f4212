# The fwsiem sidecar image: the CLI with its models, used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /opt/fwsiem
COPY setup.cfg pyproject.toml README.md ./
COPY plugin ./plugin
COPY ml ./ml
COPY ingest_pipelines ./ingest_pipelines
COPY kibana_saved_objects ./kibana_saved_objects
RUN rm -f plugin/assets/ingest_pipelines plugin/assets/kibana_saved_objects \
    && cp -r ingest_pipelines plugin/assets/ingest_pipelines \
    && cp -r kibana_saved_objects plugin/assets/kibana_saved_objects \
    && pip install --no-cache-dir . \
    && useradd --system --home /var/lib/fwsiem fwsiem && mkdir -p /var/lib/fwsiem && chown fwsiem /var/lib/fwsiem
USER fwsiem
WORKDIR /var/lib/fwsiem
ENTRYPOINT ["fwsiem"]
CMD ["--help"]
