// Command testapp is the tiny service in the test image testenv builds: a static binary in
// a FROM scratch image, no pull needed. Its behaviour comes from its environment:
//
//	PORT           the port to listen on (default 8080)
//	MESSAGE        what GET / answers (default "hello"); the arguments `say WORDS` override it
//	HEALTH=fail    GET /healthz answers 500 instead of 200
//	HEALTH_FAIL_AFTER=D  GET /healthz answers 500 once the app has run for duration D
//	HEALTH_REDIRECT=URL  GET /healthz answers 302 to URL
//	EXIT_CODE=N    exit with code N right after start (a crash loop)
//	EXIT_AFTER=D   exit with EXIT_CODE (default 1) after duration D
//	IGNORE_SIGTERM=1  keep running on SIGTERM (only SIGKILL stops it)
//	LOG_LINES=N    write N numbered lines to stdout at start
//	LOG_CONTROL=1  write a line with an ANSI colour sequence and a NUL to stdout at start
//
// GET /env/NAME answers the value of the variable NAME.
//
// Run with a script instead (a one-off's command), it runs its words in order and exits 0:
// printenv NAME, lines N, stderr WORD, sleep D, cat (stdin to stdout), exit N.
// GET /env/NAME answers the value of the variable NAME. GET /file/NAME answers the file
// NAME of $DATA_DIR (default /data), PUT /file/NAME writes it: a volume's contents.
//
// `testapp task WORDS...` is a one-off task instead: it prints WORDS, waits TASK_SLEEP (a
// duration, if set) and exits with TASK_EXIT (default 0).
package main
