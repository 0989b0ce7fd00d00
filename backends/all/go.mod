module github.com/carrot-go/carrot/backends/all

go 1.26.0

replace (
	github.com/carrot-go/carrot => ../..
	github.com/carrot-go/carrot/backends/amqp091 => ../../backends/amqp091
	github.com/carrot-go/carrot/backends/amqp10 => ../../backends/amqp10
	github.com/carrot-go/carrot/backends/redis => ../../backends/redis
	github.com/carrot-go/carrot/internal/amqpraw => ../../internal/amqpraw
	github.com/carrot-go/carrot/internal/testbroker => ../../internal/testbroker
)

require (
	github.com/carrot-go/carrot v0.0.0-00010101000000-000000000000
	github.com/carrot-go/carrot/backends/amqp091 v0.0.0-00010101000000-000000000000
	github.com/carrot-go/carrot/backends/amqp10 v0.0.0-00010101000000-000000000000
	github.com/carrot-go/carrot/backends/redis v0.0.0-00010101000000-000000000000
)

require (
	github.com/Azure/go-amqp v1.7.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/rabbitmq/amqp091-go v1.16.0 // indirect
	github.com/redis/go-redis/v9 v9.23.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
