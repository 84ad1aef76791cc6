// A stand-in for monis.app/mlog v0.0.4 (AWI v1.6.0's logging library), written for nmisim: that module's
// host is not on this workplace's Go module-host allowlist, so hack/awi.sh builds AWI with
// `replace monis.app/mlog => this directory`. Same API as AWI uses it; logs are JSON lines on stderr.
module monis.app/mlog

go 1.22

require github.com/go-logr/logr v1.4.3
