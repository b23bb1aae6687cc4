# One image for every mode: `docker run IMAGE serve|work|migrate|run|bench`.
# Build: docker build -t wallet .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies are built against stub sources first, so that this layer stays cached until
# Cargo.toml or Cargo.lock change, and a source edit rebuilds only the wallet crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
COPY sql sql
# COPY keeps the files' original times, which can be older than the stub build; touching them
# makes cargo rebuild the crate instead of shipping the stub.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/wallet /usr/local/bin/wallet

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wallet \
    && useradd --system --uid 10001 --gid wallet --no-create-home --shell /usr/sbin/nologin wallet
COPY --from=build /usr/local/bin/wallet /usr/local/bin/wallet
# `wallet` reads ./config.toml when present: mount one at /etc/wallet/config.toml, or use
# WALLET_* variables.
WORKDIR /etc/wallet
# The built-in listen address, 127.0.0.1, is unreachable from outside the container.
ENV WALLET_HTTP__LISTEN=0.0.0.0:8080
# Numeric, so that orchestrators can verify the user is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["wallet"]
CMD ["--help"]
