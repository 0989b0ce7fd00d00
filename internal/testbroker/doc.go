// Package testbroker gives the tests of carrot's broker backends the URL of a real broker.
//
//	func TestSomething(t *testing.T) {
//		url := testbroker.URL(t, testbroker.RabbitMQ)
//		...
//	}
//
// # Where the broker comes from
//
// [URL] looks, in order, for:
//
//  1. The kind's URL environment variable ([Kind.URLEnv]: CARROT_TEST_AMQP091_URL,
//     CARROT_TEST_AMQP10_URL or CARROT_TEST_REDIS_URL). When it is set, its value is
//     returned as it is, and nothing is started.
//  2. Docker. When it is usable (see below), a container of the kind's image is started
//     with testcontainers-go, [URL] returns a URL to it on 127.0.0.1, and the container is
//     removed when the test and its subtests end. The image is the one named by
//     [Kind.ImageEnv] (CARROT_TEST_RABBITMQ_IMAGE, CARROT_TEST_RABBITMQ4_IMAGE or
//     CARROT_TEST_REDIS_IMAGE), else [Kind.DefaultImage], the official image.
//  3. Neither: the test is skipped, saying which variable to set and why Docker was not
//     usable. With CARROT_TEST_REQUIRE_BROKERS=1 the test fails instead, so that CI never
//     passes with a broker test skipped.
//
// A package whose tests call [URL] should run them with [Main], from TestMain: its tests
// then share one container of each kind, started on first use and removed when they are
// done. Without Main, every call of URL that finds no URL variable starts a container of
// its own, which takes seconds for Redis and tens of seconds for RabbitMQ. [Start] always
// starts a dedicated container, whatever the environment says, for tests that restart or
// disturb the broker; [Container.Exec] runs a command in it, such as
// "rabbitmqctl stop_app". [CanStart] tells, without starting one, whether Start could.
// [Missing] skips or fails a test the same way for something else it needs, such as
// another client of the broker (Kombu, amqp-tools) for an interoperability test.
//
// # When Docker is usable
//
// Containers are only started when all of these hold; otherwise Docker counts as unusable
// and the reason is given:
//
//   - TESTCONTAINERS_HOST_OVERRIDE is localhost or 127.0.0.1. Without it testcontainers-go
//     may decide that it runs inside a container and dial the default gateway, an address
//     off the machine.
//   - TESTCONTAINERS_RYUK_DISABLED is true. This package removes its containers itself and
//     never starts the Ryuk reaper, whose image may not be pullable.
//   - The Docker engine (DOCKER_HOST, or the testcontainers properties file) is on this
//     machine, and answers.
//   - The image is present locally. This package never pulls an image: pull or build it
//     first. No hub image name prefix may be configured for testcontainers-go, because it
//     would change the image's name; name the full image in [Kind.ImageEnv] instead.
//
// Published ports are bound to 127.0.0.1 only, and tests reach the broker there.
//
// On carrot's machines, where no registry can be reached, the engine and the images are
// made by a script that prints the settings to use; from the module's root:
//
//	eval "$(../shared/ci/docker-up.sh)"
//	CARROT_TEST_REQUIRE_BROKERS=1 go test -race ./...
//
// # Readiness
//
// A started container counts as ready once its broker has logged that it accepts clients
// ("Server startup complete" for RabbitMQ, "Ready to accept connections" for Redis) and
// its port accepts connections, within three minutes.
package testbroker
