module github.com/guardwire/guardwire/clients/go

go 1.19

// The versions are those Debian bookworm ships (golang-google-grpc-dev etc.); CI builds
// offline with GOWORK=debian.work, which replaces every module with /usr/share/gocode.
// With a module proxy, `go mod tidy && go build ./...` should work too (not testable offline).
require (
	github.com/golang/protobuf v1.5.2
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
