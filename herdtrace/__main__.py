from herdtrace.cli import main

main()
