module {{name}}

go 1.24

require github.com/plughost/plughost/plugin-guest-sdk/go v0.1.0

// plughost's Go SDK, copied in by `plughost plugin new`.
replace github.com/plughost/plughost/plugin-guest-sdk/go => ./plughost-sdk
