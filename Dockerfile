# syntax=docker/dockerfile:1
#
# One image, two programs: `mall` (every service, the gateway and migrations: `mall serve <service>`,
# `mall migrate <service>`, `mall up`) and `mall-operator`. The operator's chart names its command
# explicitly; the image's entrypoint is `mall`.
#
#   docker build -t ghcr.io/example/mall:0.1.0 .
#   docker run --rm -p 8889:8889 ghcr.io/example/mall:0.1.0          # `mall up`: the whole shop
#
# Layers: the dependency build depends only on the manifests (Cargo.toml files and Cargo.lock), so
# changing a source file rebuilds the workspace's own crates and nothing else.

ARG RUST_VERSION=1.95
ARG VERSION=0.1.0

# --- 1. The workspace skeleton: every manifest, and an empty stand-in for every source file a
#        manifest needs to load. Its content (hence the cache key of the COPY below) changes only when a
#        manifest or the lock file does.
FROM rust:${RUST_VERSION}-bookworm AS skeleton
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    for manifest in $(find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml'); do \
      dir=$(dirname "$manifest"); \
      mkdir -p "/skeleton/$dir/src"; \
      cp "$manifest" "/skeleton/$dir/Cargo.toml"; \
      : > "/skeleton/$dir/src/lib.rs"; \
      if [ -f "$dir/build.rs" ]; then echo 'fn main() {}' > "/skeleton/$dir/build.rs"; fi; \
      for target in $(sed -n 's/^path *= *"\([^"]*\.rs\)".*/\1/p' "$manifest"); do \
        mkdir -p "/skeleton/$dir/$(dirname "$target")"; \
        echo 'fn main() {}' > "/skeleton/$dir/$target"; \
      done; \
    done

# --- 2. Build: dependencies first (cached), then the real sources.
FROM rust:${RUST_VERSION}-bookworm AS build
ENV CARGO_TARGET_DIR=/target \
    CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked -p mall -p mall-operator
# Drop the stand-ins (a stand-in lib.rs must not survive beside a real main.rs), then take the real tree.
RUN find /src -mindepth 1 -delete
COPY . .
# Sources from the build context can be older than the stand-ins' build: make them newer so cargo
# rebuilds every workspace crate instead of trusting the stand-ins' fingerprints.
RUN find /src -type f -exec touch {} + \
 && cargo build --release --locked -p mall -p mall-operator \
 && mkdir -p /out \
 && cp /target/release/mall /target/release/mall-operator /out/ \
 && /out/mall --help >/dev/null \
 && /out/mall-operator --help >/dev/null

# --- 3. Runtime: glibc and libgcc only, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
LABEL org.opencontainers.image.title="mall" \
      org.opencontainers.image.description="Mall: gRPC services, HTTP gateway and Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mall /out/mall-operator /usr/local/bin/
USER 65532:65532
WORKDIR /home/nonroot
# `mall up` in a container: listen on every interface, keep SQLite files in the home directory.
ENV MALL_GATEWAY_LISTEN=0.0.0.0:8889 \
    MALL_DATA_DIR=/home/nonroot/mall-data
EXPOSE 8889 50051 8080
ENTRYPOINT ["/usr/local/bin/mall"]
CMD ["up"]
