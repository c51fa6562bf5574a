from dddframe.cli import main

main()
