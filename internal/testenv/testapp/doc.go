// Command testapp is the tiny service in the test image testenv builds: a static binary in
// a FROM scratch image, no pull needed. Its behaviour comes from its environment:
//
//	PORT           the port to listen on (default 8080)
//	MESSAGE        what GET / answers (default "hello")
//	HEALTH=fail    GET /healthz answers 500 instead of 200
//	HEALTH_FAIL_AFTER=D  GET /healthz answers 500 once the app has run for duration D
//	HEALTH_REDIRECT=URL  GET /healthz answers 302 to URL
//	EXIT_CODE=N    exit with code N right after start (a crash loop)
//	EXIT_AFTER=D   exit with EXIT_CODE (default 1) after duration D
//	IGNORE_SIGTERM=1  keep running on SIGTERM (only SIGKILL stops it)
//
// GET /env/NAME answers the value of the variable NAME.
package main
