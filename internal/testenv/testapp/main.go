package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && script[os.Args[1]] {
		runScript(os.Args[1:])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "task" {
		task(os.Args[2:])
	}
	code := 1
	if s := os.Getenv("EXIT_CODE"); s != "" {
		code, _ = strconv.Atoi(s)
		if os.Getenv("EXIT_AFTER") == "" {
			fmt.Fprintf(os.Stderr, "testapp: exiting with %d as asked\n", code)
			os.Exit(code)
		}
	}
	if d, err := time.ParseDuration(os.Getenv("EXIT_AFTER")); err == nil {
		time.AfterFunc(d, func() {
			fmt.Fprintf(os.Stderr, "testapp: exiting with %d after %s as asked\n", code, d)
			os.Exit(code)
		})
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			if os.Getenv("IGNORE_SIGTERM") == "1" {
				fmt.Fprintf(os.Stderr, "testapp: ignoring %s\n", s)
				continue
			}
			os.Exit(0)
		}
	}()

	message := os.Getenv("MESSAGE")
	if message == "" {
		message = "hello"
	}
	// Lines for the logs tests: LOG_LINES numbered lines on stdout, and with LOG_CONTROL=1
	// one with an ANSI colour sequence and a NUL in it.
	if n, err := strconv.Atoi(os.Getenv("LOG_LINES")); err == nil {
		for i := 1; i <= n; i++ {
			fmt.Printf("testapp: line %d of %d, message %s\n", i, n, message)
		}
	}
	if os.Getenv("LOG_CONTROL") == "1" {
		fmt.Printf("testapp: \x1b[31mred\x1b[0m and a NUL \x00 from %s\n", message)
	}
	if len(os.Args) == 3 && os.Args[1] == "say" { // a command given to the container
		message = os.Args[2]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, message)
	})
	started := time.Now()
	failAfter, failLater := time.ParseDuration(os.Getenv("HEALTH_FAIL_AFTER"))
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if to := os.Getenv("HEALTH_REDIRECT"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		if failLater == nil && time.Since(started) >= failAfter {
			http.Error(w, "unhealthy after "+failAfter.String()+" as asked", http.StatusInternalServerError)
			return
		}
		if os.Getenv("HEALTH") == "fail" {
			http.Error(w, "unhealthy as asked", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/env/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, os.Getenv(strings.TrimPrefix(r.URL.Path, "/env/")))
	})
	// /fetch?url=U: GET U from inside the container (1s timeout): "<status> <body>", or
	// "error: ..." when no answer came; for tests of what an instance can reach.
	http.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		// A new connection each time: a sibling proxy balances connections, not requests.
		c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(r.URL.Query().Get("url"))
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		fmt.Fprintf(w, "%d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	})
	dataDir := os.Getenv("DATA_DIR")
	if dataDir == "" {
		dataDir = "/data"
	}
	http.HandleFunc("/file/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/file/")
		if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
			http.Error(w, "bad file name", http.StatusBadRequest)
			return
		}
		file := filepath.Join(dataDir, name)
		switch r.Method {
		case http.MethodPut:
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err == nil {
				err = os.WriteFile(file, b, 0o600)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		default:
			b, err := os.ReadFile(file)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			w.Write(b)
		}
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	fmt.Fprintf(os.Stderr, "testapp: listening on :%s\n", port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// script are the words of a one-off's script (see doc.go): testapp run as a command.
var script = map[string]bool{"printenv": true, "lines": true, "stderr": true, "sleep": true, "exit": true, "cat": true}

// runScript runs words one after the other: printenv NAME (its value, a line), lines N
// (N numbered lines on stdout), stderr WORD (a line on stderr), sleep D, cat (stdin to
// stdout), exit N.
func runScript(words []string) {
	for i := 0; i < len(words); i++ {
		arg := func() string {
			i++
			if i >= len(words) {
				fmt.Fprintf(os.Stderr, "testapp: %s wants an argument\n", words[i-1])
				os.Exit(2)
			}
			return words[i]
		}
		switch words[i] {
		case "printenv":
			fmt.Println(os.Getenv(arg()))
		case "lines":
			n, _ := strconv.Atoi(arg())
			for j := 1; j <= n; j++ {
				fmt.Printf("line %d\n", j)
			}
		case "stderr":
			fmt.Fprintln(os.Stderr, arg())
		case "sleep":
			d, _ := time.ParseDuration(arg())
			time.Sleep(d)
		case "cat":
			io.Copy(os.Stdout, os.Stdin)
		case "exit":
			n, _ := strconv.Atoi(arg())
			os.Exit(n)
		default:
			fmt.Fprintf(os.Stderr, "testapp: unknown word %q\n", words[i])
			os.Exit(2)
		}
	}
}

// task is the one-off mode: print what it is given, wait TASK_SLEEP, exit with TASK_EXIT.
func task(args []string) {
	fmt.Printf("task: %s\n", strings.Join(args, " "))
	if d, err := time.ParseDuration(os.Getenv("TASK_SLEEP")); err == nil {
		time.Sleep(d)
	}
	code, _ := strconv.Atoi(os.Getenv("TASK_EXIT"))
	fmt.Printf("task: done, exit %d\n", code)
	os.Exit(code)
}
