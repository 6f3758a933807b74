# One image for every openbell service; the compose file picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eventstore ./eventstore
COPY services ./services
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd --system openbell
USER openbell
ENTRYPOINT ["openbell"]
CMD ["doctor"]
