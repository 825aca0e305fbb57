# One image for every role of the cluster (node, coordinator, gateway): the
# command picks the role, e.g. `node --service stock --id 2`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p cart-cluster --bin cart

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data cart \
 && mkdir -p /data /etc/cart \
 && chown cart /data
COPY --from=build /src/target/release/cart /usr/local/bin/cart
COPY cluster.toml /etc/cart/cluster.toml
ENV CART_SPEC=/etc/cart/cluster.toml
USER cart
VOLUME /data
# Each role's readiness endpoint; compose sets CART_HEALTH_URL per container.
HEALTHCHECK --interval=5s --timeout=2s --retries=5 \
  CMD curl -fsS "${CART_HEALTH_URL:-http://127.0.0.1:8001/ready}" || exit 1
ENTRYPOINT ["cart"]
