# Training image: docker build -t dltoolkit . && docker run -v $PWD:/work dltoolkit classify --data /work/imgs
# Serving uses the stock tensorflow/serving image (see README, "Serving").
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/dltoolkit
COPY pyproject.toml README.md ./
COPY dltoolkit ./dltoolkit
COPY recipes ./recipes
RUN pip install . && useradd --create-home trainer
USER trainer
WORKDIR /work
ENTRYPOINT ["dltoolkit"]
CMD ["--help"]
