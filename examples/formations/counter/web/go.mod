module example.com/counter/web

go 1.26
