# vsop container image: `make image` (docker build -t vsop:<version> .).
# Runs as the numeric non-root user 65532 on a read-only root filesystem; the only writable
# path it needs is /tmp (boot ISOs are built there), which deploy/manager mounts as an emptyDir.

# --- build: compile TypeScript with the dev dependencies -------------------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npx tsc -p tsconfig.json

# --- production dependencies only ------------------------------------------------------------
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime ---------------------------------------------------------------------------------
FROM node:24-bookworm-slim
# xorriso builds the per-server boot ISOs (boot method "iso").
RUN apt-get update \
    && apt-get install -y --no-install-recommends xorriso \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps \
    TMPDIR=/tmp \
    HOME=/tmp
# Owned by root and read-only to the process: nothing under /app is written at run time.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# V8's compiled code for the operator's modules (src/main.ts uses it), made here so that a new pod
# does not compile them again on its way to the first lists. Node keeps one cache per user id, so
# it is made as the user the operator runs as, then handed to root: read-only at run time.
ENV NODE_COMPILE_CACHE=/app/compile-cache
RUN install -d -o 65532 -g 65532 /app/compile-cache
USER 65532:65532
RUN node --input-type=module -e 'await import("/app/dist/caches.js"); await import("/app/dist/operator.js")'
USER root
RUN chown -R root:root /app/compile-cache && chmod -R a+rX /app/compile-cache
# metrics, health probes, provisioning (kickstart / install signal)
EXPOSE 8080 8081 8082
USER 65532:65532
ENTRYPOINT ["node", "dist/main.js"]
CMD ["run"]
