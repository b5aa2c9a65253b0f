#!/usr/bin/env bash
# Install what objcached needs to build, test and demo on Debian 12, and only
# that: quiet and quick when everything is already there. Run as root.
#
#   bash scripts/deps.sh                  # build, tests, demo
#   bash scripts/deps.sh nutcracker ...   # and these packages too (bench/run.sh)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# openssl: test_tls.py makes its certificate with the CLI (not in minimal images).
# krb5-kdc, krb5-admin-server (kdb5_util, kadmin.local), krb5-user (kinit) and
# python3-gssapi: test_gssapi.py runs its own Kerberos realm and a GSSAPI front.
# pgbouncer: tests/integration/test_pgbouncer.py starts its own, in front of
# the test cluster (Debian 12's is 1.18).
# Debian 12 has no real postgresql-contrib-15 package (postgresql-15 provides
# that name and ships the contrib modules, pg_stat_statements included);
# postgresql-contrib is the metapackage that pulls it in.
# The real clients of tests/integration/test_real_clients.py: pylibmc,
# Dalli (and ruby), Node (its clients come from npm, installed by the test),
# Go with Debian's gomemcache (built offline), and Django's cache framework on
# pymemcache and pylibmc (python3-django 3.2).
# locales: tests/integration/test_pg_locale.py runs a server with
# lc_messages = 'de_DE.UTF-8' (generated below; postgresql-15 ships the
# German catalogue).
# systemd and util-linux (unshare): tests/integration/test_systemd.py runs the
# packaged units under a real systemd (a user manager in a mount namespace of
# its own; the machine need not have booted with systemd).
pkgs=(build-essential cmake pkg-config libevent-dev libmemcached-dev libpq-dev libssl-dev
      libcmocka-dev libjansson-dev memcached postgresql-15 postgresql-contrib python3
      python3-pytest python3-psycopg2 python3-pymemcache procps php-cli php-memcached
      valgrind clang libclang-rt-14-dev cppcheck clang-tidy
      python3-pylibmc ruby ruby-dalli nodejs golang-go golang-github-bradfitz-gomemcache-dev
      python3-django pgbouncer openssl krb5-kdc krb5-admin-server krb5-user python3-gssapi
      locales systemd util-linux "$@")
# Debian's nodejs comes without npm (package npm); NodeSource's has it built in
# and conflicts with Debian's npm: ask for the package only if no npm exists.
command -v npm >/dev/null || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps.sh: missing packages: ${missing[*]}" >&2
        echo "deps.sh: run as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "deps.sh: installing: ${missing[*]}"
    # The tests and the demo start their own throwaway clusters; do not let
    # the package create and start a system-wide 'main' cluster as well.
    if [[ " ${missing[*]} " == *" postgresql-15 "* && ! -d /etc/postgresql/15/main ]]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" \
            >/etc/postgresql-common/createcluster.d/00-objcached-no-main-cluster.conf
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # The package starts a system-wide pgbouncer on localhost:6432 (where
    # systemd or the init script run): the tests start their own, so stop
    # and disable the one we installed.
    if [[ " ${missing[*]} " == *" pgbouncer "* ]]; then
        systemctl disable --now pgbouncer >/dev/null 2>&1 ||
            service pgbouncer stop >/dev/null 2>&1 || true
    fi
fi

# A German PostgreSQL needs the locale generated (minimal images have none).
if ! locale -a 2>/dev/null | grep -qix 'de_DE.utf-\?8'; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps.sh: locale de_DE.UTF-8 missing: run as root" >&2
        exit 1
    fi
    echo "deps.sh: generating locale de_DE.UTF-8"
    sed -i 's/^# *\(de_DE.UTF-8 UTF-8\)/\1/' /etc/locale.gen
    grep -qx 'de_DE.UTF-8 UTF-8' /etc/locale.gen || echo 'de_DE.UTF-8 UTF-8' >>/etc/locale.gen
    locale-gen >/dev/null
fi

pgss=(/usr/lib/postgresql/*/lib/pg_stat_statements.so)
if [[ ! -e "${pgss[0]}" ]]; then
    echo "deps.sh: pg_stat_statements.so not found under /usr/lib/postgresql/*/lib" >&2
    exit 1
fi
