#!/bin/sh
# Starts mosquitto in the compose demo with broker-config/mosquitto.conf and broker-config/acl.
# Changes from the repository config, and only these: the plain listener listens on all of
# the container's interfaces (the compose network is the "loopback" here; the host maps it to
# 127.0.0.1 only), and the TLS listener is left out (no certificates in the demo).
# Users: GEMFLEET_BROKER_USERS="name:ENV_VAR ..." — each password is read from ENV_VAR.
set -eu
mkdir -p /etc/mosquitto/gemfleet /var/lib/mosquitto
cp /gemfleet/broker-config/acl /etc/mosquitto/gemfleet/acl
umask 077
: > /etc/mosquitto/gemfleet/passwd
for entry in ${GEMFLEET_BROKER_USERS:?set GEMFLEET_BROKER_USERS}; do
  user="${entry%%:*}"
  var="${entry#*:}"
  password="$(printenv "$var" || true)"
  [ -n "$password" ] || { echo "mosquitto-entrypoint: $var is empty (password of $user)" >&2; exit 1; }
  printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd /etc/mosquitto/gemfleet/passwd "$user" >/dev/null
done
chown -R mosquitto:mosquitto /etc/mosquitto/gemfleet /var/lib/mosquitto
sed -e 's/^listener 1883 127\.0\.0\.1$/listener 1883 0.0.0.0/' \
    -e '/^listener 8883$/d' -e '/^cafile /d' -e '/^certfile /d' -e '/^keyfile /d' \
    -e '/^tls_version /d' -e '/^require_certificate /d' \
    /gemfleet/broker-config/mosquitto.conf > /etc/mosquitto/gemfleet/mosquitto.conf
exec mosquitto -c /etc/mosquitto/gemfleet/mosquitto.conf
