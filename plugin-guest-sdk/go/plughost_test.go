package plughost

import (
	"strings"
	"testing"
)

func TestHeaderLookupIgnoresCaseAndTakesTheFirst(t *testing.T) {
	req := &Request{Headers: []Header{{"x-a", "1"}, {"X-A", "2"}}}
	if v, ok := req.Header("X-a"); !ok || v != "1" {
		t.Fatalf("got %q %v", v, ok)
	}
	if _, ok := req.Header("x-b"); ok {
		t.Fatal("found a header that is not there")
	}
}

func TestTextAndJSONSetTheirContentTypeAndLowerHeaderNames(t *testing.T) {
	a := Text(418, "teapot\n", Header{"X-Kind", "tea"})
	r := a.respond
	if r == nil || r.Status != 418 || string(r.Body) != "teapot\n" {
		t.Fatalf("%+v", r)
	}
	want := []Header{{"content-type", "text/plain; charset=utf-8"}, {"x-kind", "tea"}}
	if len(r.Headers) != 2 || r.Headers[0] != want[0] || r.Headers[1] != want[1] {
		t.Fatalf("%+v", r.Headers)
	}
	j, err := JSON(200, map[string]int{"n": 1})
	if err != nil || string(j.respond.Body) != `{"n":1}` || j.respond.Headers[0].Value != "application/json" {
		t.Fatalf("%+v %v", j.respond, err)
	}
	if _, err := JSON(200, func() {}); err == nil {
		t.Fatal("a function has no JSON form")
	}
}

func TestNextCarriesItsEditsAndAnswersNothing(t *testing.T) {
	a := Next(Edits{RemoveHeaders: []string{"cookie"}})
	if a.respond != nil || a.edits.RemoveHeaders[0] != "cookie" {
		t.Fatalf("%+v", a)
	}
}

func TestConfigTakesOnlyAnObject(t *testing.T) {
	var c struct{ Greeting string }
	if err := Config(`{"greeting":"hi"}`, &c); err != nil || c.Greeting != "hi" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{`[]`, `"x"`, `{"greeting":`} {
		if err := Config(bad, &c); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
}

func TestGuardTurnsAPanicIntoTheCallsError(t *testing.T) {
	err := guard(func() error {
		var headers []Header
		_ = headers[3]
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "panic: runtime error: index out of range") {
		t.Fatalf("%v", err)
	}
}
