#!/bin/sh
# Container entrypoint: `guardwire-entrypoint serve [ARGS...]` == `guardwire serve [ARGS...]`.
# Sets the umask first so that a Unix socket the server creates (listen: unix:/...) can be
# opened by the app container sharing the socket's emptyDir: with the default 0007 the socket
# is rw for the guard's group (gid 10001, or the pod's fsGroup through the setgid volume dir).
# GUARDWIRE_UMASK overrides it.
umask "${GUARDWIRE_UMASK:-0007}"
exec guardwire "$@"
