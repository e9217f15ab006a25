#!/bin/sh
# sandbox-init.sh MODE SANDBOX_DIR STAGE_DIR LIFETIME_SECONDS CAPS_DROP
#
# Runs as PID 1 of fresh mount, PID, UTS, IPC, network and cgroup namespaces
# (made by unshare, see sandbox_test.go). It builds an overlay of the host's /
# whose writes land on a tmpfs, mounts fresh /proc, /sys, /dev, /run and /tmp
# and a cgroup2 file system rooted at this cgroup namespace, binds STAGE_DIR
# read-only at /opt/portwatch-systest, pivots into the overlay and then:
#   boot:       execs systemd as PID 1; a timer powers it off after LIFETIME;
#   nosystemd:  installs and purges the package with no systemd running.
# Nothing here touches the host: every mount is made in the private mount
# namespace and disappears with it.
set -eu
MODE=$1 SB=$2 STAGE=$3 LIFETIME=$4 DROP=$5

mount --make-rprivate /
mount -t tmpfs -o mode=0755,size=1g portwatch-systest "$SB"
mkdir "$SB/upper" "$SB/work" "$SB/root"
mount -t overlay -o "lowerdir=/,upperdir=$SB/upper,workdir=$SB/work" portwatch-systest-root "$SB/root"
R=$SB/root

mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
# The sandbox has no user namespace: its root is the host's root, and the
# kernel state behind /proc/sys (but for the network namespace's own
# net.*, the PID namespace's kernel.pid_max, the UTS names) is the host's.
# As systemd-nspawn does, bind /proc/sys and /proc/sysrq-trigger read-only
# over themselves, and binfmt_misc too should it be mounted: systemd then
# skips systemd-sysctl, systemd-binfmt and the binfmt_misc automount by
# their ConditionPathIsReadWrite=, and whatever still tries gets EROFS.
for p in "$R/proc/sys" "$R/proc/sysrq-trigger" "$R/proc/sys/fs/binfmt_misc"; do
	if [ -e "$p" ] && { [ "$p" != "$R/proc/sys/fs/binfmt_misc" ] || mountpoint -q "$p"; }; then
		mount --bind "$p" "$p"
		mount -o remount,bind,ro,nosuid,nodev,noexec "$p"
	fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid,nodev,size=256m tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=256m tmpfs "$R/tmp"

# A minimal /dev, as systemd-nspawn makes it: no host devices but the
# harmless character devices, its own devpts instance.
mount -t tmpfs -o mode=0755,nosuid,size=4m dev "$R/dev"
for d in null zero full random urandom tty; do
	touch "$R/dev/$d"
	mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
# systemd's console output goes to a file the test shows on failure.
touch "$R/dev/console"
mount --bind "$STAGE/console.log" "$R/dev/console"

mkdir -p "$R/opt/portwatch-systest"
mount --bind "$STAGE" "$R/opt/portwatch-systest"
mount -o remount,bind,ro "$R/opt/portwatch-systest"

echo portwatch-systest >"$R/etc/hostname"
hostname portwatch-systest

if [ "$MODE" = boot ]; then
	# Container images often carry a policy-rc.d that forbids starting
	# services from maintainer scripts; a real system has none.
	rm -f "$R/usr/sbin/policy-rc.d"
	# Units that make no sense in a throwaway container, that would listen
	# on ports (the daemon under test would rightly alert on them), or that
	# act on host-global kernel state: sysctls, binfmt_misc (whose
	# ExecStop= unregisters every host entry), kernel modules, the random
	# pool, debugfs, tracefs, configfs, hugetlbfs, the boot loader.
	for u in \
		getty@tty1.service console-getty.service serial-getty@.service getty.target \
		systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
		systemd-logind.service systemd-timesyncd.service systemd-pstore.service \
		systemd-networkd.service systemd-resolved.service systemd-journald-audit.socket \
		remote-fs.target cron.service ssh.service ssh.socket \
		postgresql.service prometheus-alertmanager.service prometheus-node-exporter.service \
		e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
		dpkg-db-backup.timer fstrim.timer man-db.timer logrotate.timer \
		systemd-sysctl.service systemd-binfmt.service systemd-modules-load.service \
		proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
		kmod-static-nodes.service systemd-random-seed.service systemd-hwdb-update.service \
		systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-boot-update.service \
		sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
		sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount; do
		ln -sf /dev/null "$R/etc/systemd/system/$u"
	done
	# The sandbox's own end of life, should the test die: the outer
	# timeout kills the leader shortly after.
	cat >"$R/etc/systemd/system/portwatch-systest-lifetime.timer" <<-UNIT
	[Timer]
	OnActiveSec=${LIFETIME}s
	AccuracySec=1s
	[Install]
	WantedBy=timers.target
	UNIT
	cat >"$R/etc/systemd/system/portwatch-systest-lifetime.service" <<-UNIT
	[Service]
	Type=oneshot
	ExecStart=/bin/systemctl --no-block poweroff
	UNIT
	mkdir -p "$R/etc/systemd/system/timers.target.wants"
	ln -sf ../portwatch-systest-lifetime.timer "$R/etc/systemd/system/timers.target.wants/"
fi

cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /

# Both modes run without the capabilities whose effects no namespace
# confines: loading modules, setting the clock, raw I/O, rebooting
# (systemd-shutdown in a container exits when reboot() is refused),
# the kernel log, process accounting, audit rules, LSM policy, alarms and
# suspend. No CAP_MKNOD either: with no device cgroup, a node made in the
# sandbox's /dev would reach the host's device; systemd falls back to
# bind mounts for PrivateDevices=. The test's commands (nsenter) drop the
# same set; sandbox_test.go keeps the list (CAPS_DROP, as setpriv's
# --bounding-set takes it).
case $MODE in
boot)
	exec setpriv --bounding-set "$DROP" env -i container=portwatch-systest PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		/lib/systemd/systemd --show-status=no systemd.unit=multi-user.target
	;;
nosystemd)
	exec setpriv --bounding-set "$DROP" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive sh -euxc '
		test ! -e /run/systemd/system
		dpkg -i /opt/portwatch-systest/portwatchd.deb
		test -x /usr/sbin/portwatchd
		test -L /etc/systemd/system/multi-user.target.wants/portwatchd.service
		dpkg --purge portwatchd
		test ! -e /usr/sbin/portwatchd
		test ! -e /etc/systemd/system/multi-user.target.wants/portwatchd.service
		echo NOSYSTEMD-OK
	'
	;;
esac
echo "sandbox-init.sh: unknown mode $MODE" >&2
exit 2
