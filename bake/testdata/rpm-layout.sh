#!/bin/sh
# Lays a Debian lab guest out as Fedora's (and EPEL's) buildbot-worker RPM
# lays a machine out, as the buildbot worker guide describes it: a
# buildbot-worker system user, /var/lib/buildbot/worker/ as the base of the
# worker directories, a templated unit buildbot-worker@.service running
# /usr/bin/buildbot-worker. The program itself comes from PyPI (through the
# lab's mirror): no RPM repository is reachable here. The unit text follows
# the guide's description of the RPM's; it is not the package's own file.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get -q -y update >&2
apt-get -q -y install --no-install-recommends python3-venv >&2
if [ ! -x /usr/lib/buildbot-worker/bin/python3 ]; then
	python3 -m venv /usr/lib/buildbot-worker
fi
/usr/lib/buildbot-worker/bin/python3 -m pip install --disable-pip-version-check --no-input buildbot-worker >&2
ln -sf /usr/lib/buildbot-worker/bin/buildbot-worker /usr/bin/buildbot-worker
if ! getent passwd buildbot-worker >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/buildbot --no-create-home \
		--shell /usr/sbin/nologin --comment 'Buildbot Worker' buildbot-worker
fi
install -d -m 0755 /var/lib/buildbot
install -d -o buildbot-worker -g buildbot-worker -m 0755 /var/lib/buildbot/worker
cat >/usr/lib/systemd/system/buildbot-worker@.service <<'UNIT'
[Unit]
Description=Buildbot Worker %i
Documentation=man:buildbot-worker(1) https://docs.buildbot.net/
After=network-online.target
Wants=network-online.target
ConditionDirectoryNotEmpty=/var/lib/buildbot/worker/%i
ConditionFileNotEmpty=/var/lib/buildbot/worker/%i/buildbot.tac

[Service]
Type=simple
User=buildbot-worker
Group=buildbot-worker
WorkingDirectory=/var/lib/buildbot/worker/%i
ExecStart=/usr/bin/buildbot-worker start --nodaemon
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
