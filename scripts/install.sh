#!/usr/bin/env bash
# Installs sav in the layout its systemd unit (and the container image)
# runs:
#
#   /usr/local/bin/sav                    the binary
#   /usr/share/sav/cache/                 the phrase cache (read-only)
#   /etc/sav/sav.toml                     the configuration (read-only; kept
#                                         when it is there already)
#   /var/lib/sav/                         the state: sav.db, recordings
#                                         (StateDirectory=sav: systemd makes
#                                         it, owned by the service's user)
#   /etc/systemd/system/sav.service       the unit
#   /usr/local/share/man/man1/sav*.1, bash completion
#
# usage: scripts/install.sh [--root DIR] [--binary PATH] [--no-unit]
#
#   --root DIR     install under DIR instead of / (a package's staging
#                  directory, a container's build stage, a test); the
#                  configuration's paths are then DIR's (DIR/var/lib/sav…),
#                  so that the tree runs where it is
#   --binary PATH  the sav binary (default: target/release/sav, built with
#                  `cargo build --release` when missing)
#   --no-unit      no systemd unit (a container)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
root=""
binary=""
unit=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a directory}"; shift 2 ;;
        --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
        --no-unit) unit=0; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
root="${root%/}"
if [ -n "$root" ]; then
    case "$root" in
        *'|'*|*'&'*|*'\'*) echo "install.sh: --root may not hold | & or \\" >&2; exit 2 ;;
    esac
    # The configuration names absolute paths.
    root="$(realpath -m "$root")"
fi
if [ -z "$binary" ]; then
    binary="$repo/target/release/sav"
    if [ ! -x "$binary" ]; then
        (cd "$repo" && cargo build --release --locked)
    fi
fi
[ -x "$binary" ] || { echo "install.sh: no executable at $binary" >&2; exit 1; }

bin_dir="$root/usr/local/bin"
share="$root/usr/share/sav"
etc="$root/etc/sav"
state="$root/var/lib/sav"

install -d "$bin_dir" "$share" "$etc"
# On the system itself, the unit's StateDirectory= makes the state
# directory, for its dynamic user; elsewhere (a tree, a container) here.
if [ -n "$root" ] || [ "$unit" = 0 ]; then
    install -d "$state"
fi
install -m 0755 "$binary" "$bin_dir/sav"
rm -rf "$share/cache"
cp -r "$repo/cache" "$share/cache"
chmod -R a+rX,go-w "$share/cache"

# The repository's configuration with the installed paths: the cache from
# /usr/share/sav, the store and recordings in the state directory. Each
# change must take: a sav.toml whose lines moved fails here, not at the
# service's first start.
config="$etc/sav.toml"
if [ -e "$config" ]; then
    echo "kept $config (already there)"
else
    tmp="$(mktemp)"
    sed -e "s|^dir = \"cache\"|dir = \"$share/cache\"|" \
        -e "s|^url = \"sqlite://sav.db\"|url = \"sqlite://$state/sav.db\"|" \
        -e "s|^# recordings_dir = \"recordings\"|# recordings_dir = \"$state/recordings\"|" \
        "$repo/sav.toml" > "$tmp"
    for line in "dir = \"$share/cache\"" "url = \"sqlite://$state/sav.db\"" \
                "# recordings_dir = \"$state/recordings\""; do
        grep -qxF "$line" "$tmp" || {
            rm -f "$tmp"
            echo "install.sh: sav.toml has no line to become: $line" >&2
            exit 1
        }
    done
    install -m 0644 "$tmp" "$config"
    rm -f "$tmp"
    echo "wrote $config"
fi

if [ "$unit" = 1 ]; then
    units="$root/etc/systemd/system"
    install -d "$units"
    install -m 0644 "$repo/examples/systemd/sav.service" "$units/sav.service"
fi
man="$root/usr/local/share/man/man1"
completions="$root/usr/local/share/bash-completion/completions"
install -d "$man" "$completions"
"$bin_dir/sav" man --out "$man"
"$bin_dir/sav" completions bash > "$completions/sav"

"$bin_dir/sav" --config "$config" check-config
echo "installed under ${root:-/}"
