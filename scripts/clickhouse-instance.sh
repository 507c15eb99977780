#!/usr/bin/env bash
# Starts or stops one ClickHouse server on loopback with its data under DIR:
#   scripts/clickhouse-instance.sh start DIR HTTP_PORT TCP_PORT
#   scripts/clickhouse-instance.sh stop DIR
# Used by scripts/services.sh for the shared test server, and by the fault tests for servers they stop.
set -euo pipefail
cmd="${1:?start|stop}"
CH="${2:?data dir}"
case "$cmd" in
  start)
    HTTP_PORT="${3:?http port}"
    TCP_PORT="${4:?tcp port}"
    mkdir -p "$CH/data" "$CH/tmp" "$CH/user_files" "$CH/log" "$CH/format_schemas"
    cp /etc/clickhouse-server/users.xml "$CH/users.xml"
    cat > "$CH/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$CH/log/clickhouse-server.log</log>
        <errorlog>$CH/log/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$CH/data/</path>
    <tmp_path>$CH/tmp/</tmp_path>
    <user_files_path>$CH/user_files/</user_files_path>
    <format_schema_path>$CH/format_schemas/</format_schema_path>
    <users_config>$CH/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
XML
    clickhouse-server --config-file="$CH/config.xml" --pid-file="$CH/clickhouse.pid" --daemon >&2 || true
    for _ in $(seq 1 150); do
      curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && exit 0
      sleep 0.2
    done
    echo "clickhouse-instance: the server on port $HTTP_PORT did not start; last log lines:" >&2
    tail -n 20 "$CH/log/clickhouse-server.err.log" "$CH/log/stderr.log" >&2 || true
    grep -E "<(Error|Fatal)>" "$CH/log/clickhouse-server.log" | tail -n 10 >&2 || true
    exit 1
    ;;
  stop)
    if [ -s "$CH/clickhouse.pid" ]; then
      pid="$(cat "$CH/clickhouse.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
      # A pid file left behind names a number the kernel may give to another process or thread, and a
      # server started on this directory again would refuse to start ("program running").
      rm -f "$CH/clickhouse.pid"
    fi
    ;;
  *) echo "usage: $0 start DIR HTTP_PORT TCP_PORT | stop DIR" >&2; exit 2 ;;
esac
