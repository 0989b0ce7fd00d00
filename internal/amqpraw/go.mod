module github.com/carrot-go/carrot/internal/amqpraw

go 1.26.0

require github.com/rabbitmq/amqp091-go v1.16.0
