module example.com/quotes/api

go 1.26
