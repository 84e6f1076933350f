# Shared by bench/run and bench/soak (sourced, not run).

# The gate's configuration: the built-in rules classifier, the shipped
# policy, every service in shadow mode: the full pipeline with no network.
# Anonymous callers acknowledged (loopback bench).
gate_yaml() { # port data-dir [store-url]
    cat <<YAML
server:
  listen: 127.0.0.1:$1
  data_dir: $2
classifier:
  provider: rules
identity:
  inbound:
    mode: none
    insecure_allow_anonymous: true
YAML
    if [ -n "${3:-}" ]; then
        cat <<YAML
store:
  url: $3
  pool_max: ${PG_POOL_MAX:-16}
YAML
        [ -n "${PGPASSWORD:-}" ] && echo "  password: { env: PGPASSWORD }"
    fi
    return 0
}

