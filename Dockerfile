# eglr as a container image: `docker build -t eglr:latest .` (the image deploy/k8s uses).
# Two stages: the build (Rust, a C toolchain for librdkafka) and a slim runtime with
# only the shared libraries the binary links (OpenSSL, zlib) and CA certificates, run
# as an unprivileged user. The entry point is the CLI: `docker run eglr:latest serve ...`.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN bash deploy/install-deps.sh \
 && cargo build --release --locked --bin eglr \
 && strip target/release/eglr

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 eglr \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin eglr
COPY --from=build /src/target/release/eglr /usr/local/bin/eglr
COPY --from=build /src/pipelines /usr/share/eglr/pipelines
COPY --from=build /src/schemas /usr/share/eglr/schemas
USER 10001:10001
# serve's and log's /metrics, /livez and /readyz.
EXPOSE 9464 9465
ENTRYPOINT ["/usr/local/bin/eglr"]
CMD ["--help"]
