// Package all registers every backend in this repository, for programs that choose their
// broker by URL alone:
//
//	import _ "github.com/carrot-go/carrot/backends/all"
//
//	conn, err := carrot.Open(ctx, os.Getenv("CARROT_URL")) // amqp://, amqps://, amqp10://, amqp10s://, redis://, rediss://, memory://
//
// It costs every backend's client library in the program's module graph; a program that
// knows its broker imports that backend alone.
package all

import (
	_ "github.com/carrot-go/carrot/backends/amqp091"
	_ "github.com/carrot-go/carrot/backends/amqp10"
	_ "github.com/carrot-go/carrot/backends/memory"
	_ "github.com/carrot-go/carrot/backends/redis"
)
