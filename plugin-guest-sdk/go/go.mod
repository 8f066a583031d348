module github.com/plughost/plughost/plugin-guest-sdk/go

go 1.24
