#!/bin/sh
# The container's entry point. `serve` (the default command) checks the
# configuration and that the state directory can be written (a volume
# mounted there must belong to the image's user, uid 10001), then runs sav
# in its place (it gets the signals: `docker stop` drains). Any other
# arguments are a sav command (`check-config`, `cache check`, `report …`).
#
#   SAV_CONFIG     the configuration (default /etc/sav/sav.toml)
#   SAV_STATE_DIR  the directory checked for writing (default /var/lib/sav,
#                  where the image's configuration puts the store and
#                  recordings; set it if your configuration puts them elsewhere)
set -eu
config="${SAV_CONFIG:-/etc/sav/sav.toml}"
state="${SAV_STATE_DIR:-/var/lib/sav}"
if [ "$#" -eq 0 ] || [ "$1" = serve ]; then
    if [ ! -d "$state" ] || [ ! -w "$state" ]; then
        echo "sav: $state is not a directory uid $(id -u) can write: mount a volume there" \
             "that it owns (docker run -v sav-data:$state …)" >&2
        exit 1
    fi
    sav --config "$config" check-config
    exec sav --config "$config" serve
fi
exec sav --config "$config" "$@"
