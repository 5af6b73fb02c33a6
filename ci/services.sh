#!/usr/bin/env bash
# A one-node Slurm cluster with accounting (munge, MariaDB, slurmdbd, slurmctld, slurmd)
# and a PostgreSQL cluster of the tests' own on this machine (on a port found free when it
# starts), for the tests marked real_slurm / real_postgres.
#
#   ci/services.sh up     install what is missing (Debian packages), start, check, write the env file
#   ci/services.sh down   stop what `up` started
#   ci/services.sh env    print the env file (export lines) that `up` wrote
#
# Needs root and apt-get (a throwaway CI machine, or a workstation you own). Every wait is
# bounded; a step that does not come up ends the script with one line naming it and the
# tail of its log. Measured on a 2-core Debian 12 machine: install about 55 s (once),
# bring-up about 6 s, tear-down about 3 s.
#
# Why the cluster looks like this:
# - accounting (slurmdbd on MariaDB, unix socket only): submitit reads job states with
#   sacct; without accounting every state is UNKNOWN and a cancelled job is never seen ended;
# - the node line is `slurmd -C` verbatim (a RealMemory above the real one makes the node
#   INVAL) at 127.0.0.1; no cgroups (linuxproc, task/none): none on a CI machine;
# - scheduling every second and cred_expire=10: the defaults add about 3 s to every job
#   and keep a requeued job pending for about 2 minutes;
# - PID 1 may reap a stopped daemon late: a zombie counts as stopped (see alive()).
set -euo pipefail

STATE=${ABLATE_SERVICES_DIR:-/var/lib/ablate-services}
ENV_FILE=$STATE/services.env
CLUSTER=ablate
PARTITION=debug
PG_ROLE=ablate
PG_PASSWORD=ablate
PG_DB=ablate
PG_CLUSTER=ablate_tests
MARKER="# written by ablate ci/services.sh"

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS WHAT LOG CMD...: run CMD until it succeeds, at most SECONDS.
wait_for() {
  local limit=$1 what=$2 log=$3; shift 3
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      [[ -n $log && -r $log ]] && tail -n 15 "$log" >&2
      die "$what did not come up within ${limit}s"
    fi
    sleep 0.2
  done
}

# A process is alive unless it is gone or a zombie (PID 1 here reaps orphans late).
alive() {
  local pid=$1 stat
  [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  stat=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat != Z && $stat != X ]]
}

pid_of() { [[ -r $1 ]] && tr -dc 0-9 <"$1" || true; }

stop_pid() {  # stop_pid NAME PIDFILE
  local name=$1 pid
  pid=$(pid_of "$2")
  if ! alive "$pid"; then rm -f "$2"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      say "$name ($pid) ignored SIGTERM for 20s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
  done
  rm -f "$2"
}

need_root() {
  [[ $(id -u) == 0 ]] || die "needs root (it installs packages and starts system daemons)"
}

# ---------------------------------------------------------------------------- install

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v munged >/dev/null || missing+=(munge)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  local t0=$SECONDS policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then  # packages must not start their daemons: this script does
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local ok=1
  timeout 300 apt-get update -qq >/dev/null || ok=0
  ((ok)) && { timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 || ok=0; }
  ((made_policy)) && rm -f "$policy"
  ((ok)) || { tail -n 15 "$STATE/apt.log" >&2 2>/dev/null; die "apt-get install ${missing[*]} failed (log: $STATE/apt.log)"; }
  say "installed in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------- munge

munge_up() {
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
    || die "munged did not start (log: /var/log/munge/munged.log)"
  wait_for 20 "munged" /var/log/munge/munged.log bash -c 'munge -n | unmunge'
}

# ---------------------------------------------------------------------------- MariaDB

mariadb_up() {
  chmod 1777 /tmp  # mariadbd's temporary files
  mkdir -p /run/mysqld "$STATE/mariadb" && chown mysql:mysql /run/mysqld "$STATE/mariadb"  # it runs as mysql
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (log: $STATE/log/mariadb-install.log)"
  fi
  if alive "$(pid_of "$STATE/mariadb/mariadbd.pid")"; then return 0; fi
  # Unix socket only; root logs in through it (unix_socket auth), which is what slurmdbd uses.
  setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
    --socket=/run/mysqld/mysqld.sock --pid-file="$STATE/mariadb/mariadbd.pid" \
    --log-error="$STATE/mariadb/mariadbd.log" </dev/null >/dev/null 2>&1 &
  wait_for 60 "mariadbd" "$STATE/mariadb/mariadbd.log" mariadb-admin --socket=/run/mysqld/mysqld.sock ping
}

# ---------------------------------------------------------------------------- Slurm

# A machine whose Slurm this script did not set up (a real cluster) is left alone.
check_ours() {
  local f
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    [[ ! -e $f ]] || head -n 1 "$f" | grep -qF "$MARKER" \
      || die "$f exists and was not written by this script: this machine's Slurm is not ours to $1"
  done
}

write_slurm_conf() {
  local host node conf=/etc/slurm/slurm.conf dbd=/etc/slurm/slurmdbd.conf
  host=$(hostname -s)
  node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=... (the node as it is)
  [[ $node == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
  mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd" "$STATE/log"
  cat >"$conf" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$dbd" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  chown root:root "$dbd" && chmod 600 "$dbd"  # slurmdbd refuses a config others can read
}

node_idle() { sinfo -h -n "$(hostname -s)" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
cluster_known() { sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; }

slurm_up() {
  write_slurm_conf
  if ! alive "$(pid_of "$STATE/slurmdbd.pid")"; then
    slurmdbd || die "slurmdbd did not start (log: $STATE/log/slurmdbd.log)"
  fi
  wait_for 60 "slurmdbd" "$STATE/log/slurmdbd.log" sacctmgr -n show cluster
  if ! alive "$(pid_of "$STATE/slurmctld.pid")"; then
    slurmctld || die "slurmctld did not start (log: $STATE/log/slurmctld.log)"
  fi
  wait_for 60 "slurmctld" "$STATE/log/slurmctld.log" scontrol ping
  wait_for 60 "the cluster's accounting record" "$STATE/log/slurmctld.log" cluster_known
  if ! alive "$(pid_of "$STATE/slurmd.pid")"; then
    slurmd || die "slurmd did not start (log: $STATE/log/slurmd.log)"
  fi
  wait_for 60 "slurmd (node $(hostname -s) idle)" "$STATE/log/slurmd.log" node_idle
  # End to end: a job runs and accounting reports it.
  local job
  job=$(sbatch --parsable -p "$PARTITION" -o /dev/null -e /dev/null --wrap true) || die "sbatch of a trivial job failed"
  wait_for 60 "a trivial job (sacct COMPLETED)" "$STATE/log/slurmctld.log" \
    bash -c "sacct -n -X -P -j $job -o State | grep -qx COMPLETED"
}

slurm_down() {
  stop_pid slurmd "$STATE/slurmd.pid"
  stop_pid slurmctld "$STATE/slurmctld.pid"
  stop_pid slurmdbd "$STATE/slurmdbd.pid"
  stop_pid mariadbd "$STATE/mariadb/mariadbd.pid"
  stop_pid munged /run/munge/munged.pid
}

# ---------------------------------------------------------------------------- PostgreSQL

# The tests get a cluster of their own ($PG_CLUSTER, made once with pg_createcluster): the
# machine's clusters are left alone, and it listens on a port found free when `up` starts
# it (a fixed port fails where something else holds it), written to the env file.

free_port() {  # a TCP port on 127.0.0.1 nobody listens on now
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local port
  for port in $(shuf -i 20000-60000 -n 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  die "no free TCP port found for PostgreSQL"
}

pg_version() {  # the newest PostgreSQL installed
  ls /usr/lib/postgresql | sort -n | tail -n 1
}

pg_field() {  # pg_field VERSION FIELD: the test cluster's port (3) or status (4), empty if none
  pg_lsclusters -h | awk -v v="$1" -v n="$PG_CLUSTER" -v f="$2" '$1==v && $2==n {print $f}'
}

postgres_up() {
  local v port tries=0
  v=$(pg_version)
  [[ -n $v ]] || die "no PostgreSQL installed under /usr/lib/postgresql"
  if [[ $(pg_field "$v" 4) != online ]]; then
    until [[ $(pg_field "$v" 4) == online ]]; do
      ((tries++ < 3)) || die "PostgreSQL $v/$PG_CLUSTER did not start on a free port (log: /var/log/postgresql/postgresql-$v-$PG_CLUSTER.log)"
      port=$(free_port)
      if [[ -z $(pg_field "$v" 3) ]]; then
        pg_createcluster "$v" "$PG_CLUSTER" -p "$port" --start-conf=manual >"$STATE/log/pg_createcluster.log" 2>&1 \
          || die "pg_createcluster $v $PG_CLUSTER failed (log: $STATE/log/pg_createcluster.log)"
      else
        pg_conftool "$v" "$PG_CLUSTER" set port "$port" || die "could not set the port of PostgreSQL $v/$PG_CLUSTER"
      fi
      # a port taken between the check and the start fails the start: then another one
      timeout 60 pg_ctlcluster "$v" "$PG_CLUSTER" start || say "PostgreSQL $v/$PG_CLUSTER did not start on port $port"
    done
    echo "$v $PG_CLUSTER" >"$STATE/pg.started"
  fi
  port=$(pg_field "$v" 3)
  wait_for 30 "PostgreSQL $v/$PG_CLUSTER" "/var/log/postgresql/postgresql-$v-$PG_CLUSTER.log" \
    runuser -u postgres -- psql -qAt -p "$port" -c 'select 1'
  # A login role that may create databases (each test makes its own) and its database.
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$port" >/dev/null <<EOF || die "could not create the $PG_ROLE role"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
EOF
  if ! runuser -u postgres -- psql -qAt -p "$port" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    runuser -u postgres -- createdb -p "$port" -O "$PG_ROLE" "$PG_DB" || die "could not create database $PG_DB"
  fi
  PG_URL="postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
  PGPASSWORD=$PG_PASSWORD psql -qAt -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d "$PG_DB" -c 'select 1' >/dev/null \
    || die "role $PG_ROLE cannot log in over TCP at 127.0.0.1:$port"
}

postgres_down() {
  [[ -r $STATE/pg.started ]] || return 0  # it was running before `up`: leave it
  local v n
  read -r v n <"$STATE/pg.started"
  timeout 60 pg_ctlcluster "$v" "$n" stop -m fast || say "PostgreSQL $v/$n did not stop cleanly"
  rm -f "$STATE/pg.started"
}

# ---------------------------------------------------------------------------- main

case ${1:-} in
  up)
    need_root
    check_ours "set up"
    mkdir -p "$STATE/log"
    t0=$SECONDS
    install_packages
    t1=$SECONDS
    munge_up
    mariadb_up
    slurm_up
    postgres_up
    cat >"$ENV_FILE" <<EOF
export ABLATE_TEST_SLURM_PARTITION=$PARTITION
export ABLATE_TEST_POSTGRES_URL=$PG_URL
EOF
    say "up: Slurm cluster '$CLUSTER' (partition $PARTITION, $(sinfo -h -o %c | head -n 1) CPUs), PostgreSQL at ${PG_URL%%\?*}"
    say "install $((t1 - t0))s, bring-up $((SECONDS - t1))s; env: $ENV_FILE"
    ;;
  down)
    need_root
    check_ours "stop"
    t0=$SECONDS
    slurm_down
    postgres_down
    rm -f "$ENV_FILE"
    say "down in $((SECONDS - t0))s"
    ;;
  env)
    [[ -r $ENV_FILE ]] || die "no $ENV_FILE: run '$0 up' first"
    cat "$ENV_FILE"
    ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
