from trashmap.cli import main

main()
