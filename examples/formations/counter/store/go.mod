module example.com/counter/store

go 1.26
